package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/state"
	"github.com/fulcrum-lb/fulcrum/vip"
)

// vipControl runs this node's VIP reconcile loop: DecideOwnership says
// whether this node holds the VIPs now, the announcer makes the system
// match. Leadership, gossip and store changes only wake the loop; it also
// resyncs on its own, so a missed event costs at most one resync period.
type vipControl struct {
	a    *Agent
	m    *membership
	spec state.VIP
	ann  vip.Announcer
	rec  *vip.Reconciler

	forced   atomic.Bool  // vip claim --force
	verified atomic.Int64 // unix nanos of the last successful VerifyLeader
	tbOK     atomic.Bool  // the tiebreaker answers
	lastHold atomic.Bool
	// lastDegraded: the last hold was granted without quorum; decidedAt
	// (unix nanos) is when the rule last ran.
	lastDegraded atomic.Bool
	decidedAt    atomic.Int64

	mu        sync.Mutex
	lastWhy   string
	holdSince time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// vipResync bounds how late the loop notices a change nobody woke it for.
const vipResync = 100 * time.Millisecond

// startVIP starts VIP control for the running config's vip section, if
// it has one and this node serves traffic.
func (a *Agent) startVIP(m *membership, spec state.VIP) (*vipControl, error) {
	if spec.Mode == state.VIPModeNone || spec.Mode == "" || a.cfg.Node.Role == "witness" {
		return nil, nil
	}
	c := &vipControl{a: a, m: m, spec: spec}
	ann, err := c.announcer()
	if err != nil {
		return nil, err
	}
	c.ann = ann
	c.rec = vip.NewReconciler(ann, c.desired, a.log.With("component", "vip"), vip.WithResync(vipResync))
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.rec.Run(ctx)
	}()
	go func() {
		defer c.wg.Done()
		c.watchLease(ctx)
	}()
	// Re-announce (not only re-check) on every leadership or membership
	// change: a returning peer may have missed the last GARP.
	m.node.setOnChange(c.rec.Kick)
	a.log.Info("VIP control started", "mode", spec.Mode, "addresses", spec.Addresses)
	return c, nil
}

func (c *vipControl) announcer() (vip.Announcer, error) {
	nc := c.a.cfg
	log := c.a.log.With("component", "vip")
	switch c.spec.Mode {
	case state.VIPModeActivePassive:
		if nc.VIP.Interface == "" {
			return nil, errors.New("vip.interface is not set and no interface holds cluster.bind_addr")
		}
		return vip.NewARPAnnouncer(nc.VIP.Interface, vip.ARPOptions{
			Burst: c.spec.GARP.Burst, Interval: c.spec.GARP.Interval.D(), Refresh: c.spec.GARP.RefreshEvery(),
			Managed: c.spec.Prefixes(), Log: log, LeaseOK: c.leaseOK,
		})
	case state.VIPModeActiveActive:
		// The /32s live on a dummy interface; a kernel without the dummy
		// driver gets them on lo (arp_ignore/arp_announce set either way).
		dev := "fulcrum0"
		if err := vip.EnsureDummy(dev); errors.Is(err, vip.ErrNoDummyDriver) {
			dev = "lo"
			if err := vip.EnsureDummy(dev); err != nil {
				return nil, err
			}
		} else if err != nil {
			return nil, err
		}
		inner, err := vip.NewDummyAnnouncer(dev, log)
		if err != nil {
			return nil, err
		}
		routerID, _ := netip.ParseAddr(nc.VIP.BGP.RouterID)
		nextHop, _ := netip.ParseAddr(nc.Cluster.BindAddr)
		var peers []vip.BGPPeer
		for _, p := range c.spec.BGP.Peers {
			addr, _ := netip.ParseAddr(p.Address)
			peers = append(peers, vip.BGPPeer{Address: addr, ASN: p.ASN})
		}
		return vip.NewBGPAnnouncer(context.Background(), vip.BGPOptions{
			LocalASN: uint32(nc.VIP.BGP.LocalASN), RouterID: routerID, ListenPort: -1, Peers: peers,
			HoldTime: c.spec.BGP.HoldTime.D(), Keepalive: c.spec.BGP.Keepalive.D(),
			ConnectRetry: c.spec.BGP.ConnectRetry.D(), NextHop: nextHop, Inner: inner, Log: log,
		})
	}
	return nil, fmt.Errorf("unknown vip mode %q", c.spec.Mode)
}

// stop withdraws (BGP) and releases every VIP this node holds, then stops.
func (c *vipControl) stop() {
	c.forced.Store(false)
	c.m.node.setOnChange(nil)
	c.cancel()
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held, _ := c.ann.Held()
	for _, p := range held {
		if err := c.ann.Release(ctx, p); err != nil {
			c.a.log.Warn("release VIP at stop", "vip", p, "err", err)
		}
	}
	c.ann.Close()
	c.m.node.setHoldsVIP(false)
}

// leaseOK is asked before every gratuitous ARP: only a leader whose lease
// was confirmed by a quorum within the lease timeout announces, so a
// leader paused and resumed does not re-announce a VIP it lost. Without
// quorum (tiebreaker, forced claim) the ownership rule alone decides.
func (c *vipControl) leaseOK() bool {
	if !c.lastHold.Load() {
		return false
	}
	n := c.m.node
	if !n.hasLeader() {
		// No leader known: only a hold the ownership rule granted without
		// quorum (tiebreaker, forced claim), decided within the last few
		// passes; never a leader's stale hold right after it stepped down.
		recent := time.Since(time.Unix(0, c.decidedAt.Load())) < 3*vipResync
		return c.lastDegraded.Load() && recent
	}
	fresh := time.Since(time.Unix(0, c.verified.Load())) < 2*n.opts.Timers.LeaderLease+n.opts.Timers.Heartbeat
	return n.isLeader() && fresh
}

// watchLease confirms leadership with a quorum every few lease periods
// while leading, and probes the tiebreaker.
func (c *vipControl) watchLease(ctx context.Context) {
	t := time.NewTicker(c.m.node.opts.Timers.LeaderLease)
	defer t.Stop()
	probe := time.NewTicker(500 * time.Millisecond)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n := c.m.node
			if n.isLeader() && n.raft.raft.VerifyLeader().Error() == nil {
				c.verified.Store(time.Now().UnixNano())
			}
		case <-probe.C:
			if tb, ok := c.spec.TiebreakerAddr(); ok {
				c.tbOK.Store(probeAddr(ctx, tb))
			}
		}
	}
}

// desired is the reconcile loop's question: which VIPs should this node
// hold right now?
func (c *vipControl) desired() []netip.Prefix {
	n := c.m.node
	leaderAddr, leaderID := n.raft.raft.LeaderWithID()
	_ = leaderAddr
	leader := ""
	if leaderID != "" {
		if nd, ok := c.m.store.View().NodeByID(string(leaderID)); ok {
			leader = nd.Name
		}
	}
	voters := n.voters()
	in := OwnershipInput{
		Self:              c.a.cfg.Node.Name,
		Mode:              c.spec.Mode,
		WithoutQuorum:     c.spec.WithoutQuorumRule(voters),
		Voters:            voters,
		Quorum:            leaderID != "",
		Leader:            leader,
		LeaseOK:           n.raft.raft.State() == raft.Leader,
		BarrierDone:       n.barrierOK.Load(),
		Fit:               c.a.fit(),
		Holding:           c.lastHold.Load(),
		HolderDead:        n.holderDead(),
		TiebreakerAnswers: c.tbOK.Load(),
		ForcedClaim:       c.forced.Load(),
	}
	d := DecideOwnership(in)
	if d.Hold != c.lastHold.Load() {
		c.a.log.Info("VIP ownership changed", "hold", d.Hold, "reason", d.Reason, "degraded", d.Degraded,
			"addresses", c.spec.Addresses)
		c.mu.Lock()
		c.holdSince = time.Now()
		c.mu.Unlock()
	}
	c.lastHold.Store(d.Hold)
	c.lastDegraded.Store(d.Hold && d.Degraded)
	c.decidedAt.Store(time.Now().UnixNano())
	c.mu.Lock()
	c.lastWhy = d.Reason
	c.mu.Unlock()
	n.setHoldsVIP(d.Hold)
	if !d.Hold {
		return nil
	}
	return c.spec.Prefixes()
}

// VIPStatus is `fulcrum vip status`: this node's reconcile loop.
type VIPStatus struct {
	Mode      string              `json:"mode"`
	Hold      bool                `json:"hold"`
	Reason    string              `json:"reason"`
	Since     time.Time           `json:"since,omitzero"`
	Forced    bool                `json:"forced"`
	Reconcile vip.ReconcileStatus `json:"reconcile"`
}

func (c *vipControl) status() VIPStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return VIPStatus{Mode: c.spec.Mode, Hold: c.lastHold.Load(), Reason: c.lastWhy, Since: c.holdSince,
		Forced: c.forced.Load(), Reconcile: c.rec.Status()}
}

// fit reports whether this node's proxy can take the VIP: its data plane
// runs the committed config and it is not draining.
func (a *Agent) fit() bool {
	if a.draining.Load() || a.handingOver.Load() {
		return false
	}
	m := a.member.Load()
	if m == nil {
		return true
	}
	return m.node.applyErr() == ""
}

// syncVIP (re)starts VIP control when the committed vip section changes.
func (a *Agent) syncVIP(m *membership, cfg *state.Config) {
	spec := cfg.EffectiveVIP()
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.member.Load() != m {
		return // detached (stopping or leaving): never start VIP control again
	}
	if c := a.vip; c != nil && reflect.DeepEqual(c.spec, spec) {
		return
	}
	if a.vip != nil {
		a.vip.stop()
		a.vip = nil
	}
	c, err := a.startVIP(m, spec)
	if err != nil {
		a.log.Error("VIP control not started", "err", err)
		return
	}
	a.vip = c
}

// stopVIP releases the VIPs (on stop, leave, drain to standalone).
func (a *Agent) stopVIP() {
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.vip != nil {
		a.vip.stop()
		a.vip = nil
	}
}

// VIPStatus returns this node's VIP reconcile state.
func (a *Agent) VIPStatus() (VIPStatus, error) {
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.vip == nil {
		return VIPStatus{Mode: state.VIPModeNone, Reason: "no VIP configured for this node"}, nil
	}
	return a.vip.status(), nil
}

// ClaimVIP is `fulcrum vip claim --force`: hold the VIP without quorum
// (release mode), because the operator says the others are gone.
func (a *Agent) ClaimVIP(force bool) error {
	if !force {
		return errors.New("claiming the VIP without quorum risks two holders: pass --force if the other nodes are down")
	}
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.vip == nil {
		return errors.New("no VIP is configured")
	}
	a.vip.forced.Store(true)
	a.vip.rec.Wake()
	return nil
}

// DrainNode is `fulcrum node drain`: this node stops reusing keep-alive
// connections, lets the requests in flight finish (bounded), hands
// leadership (and with it the VIP) to a fit node, and takes no new VIP
// traffic. ResumeNode undoes it.
func (a *Agent) DrainNode(ctx context.Context) error {
	a.draining.Store(true)
	a.vipMu.Lock()
	if a.vip != nil {
		a.vip.rec.Wake()
	}
	a.vipMu.Unlock()
	return a.handOver(ctx)
}

// handOver is the planned failover of drain and SIGTERM: no more
// keep-alive reuse; this node gives up the VIP address (it is unfit now),
// so new connections wait in the gap and their SYNs are retransmitted to
// the new holder; the requests already in flight finish; then leadership
// moves and the new leader claims and announces the VIP.
func (a *Agent) handOver(ctx context.Context) error {
	a.handingOver.Store(true)
	e := a.engine.Load()
	if e != nil {
		e.Drain(true)
	}
	a.vipMu.Lock()
	c := a.vip
	a.vipMu.Unlock()
	if c != nil {
		c.rec.Kick()
		deadline := time.Now().Add(time.Second)
		for (c.lastHold.Load() || len(c.rec.Status().Actual) > 0) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if e != nil {
		deadline := time.Now().Add(2 * time.Second)
		for e.InFlight() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	m := a.member.Load()
	if m == nil || !m.node.isLeader() || m.node.voters() < 2 {
		return nil
	}
	if err := m.node.raft.raft.LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("hand leadership over: %w", err)
	}
	return nil
}

// ResumeNode ends a drain.
func (a *Agent) ResumeNode() {
	a.draining.Store(false)
	a.handingOver.Store(false)
	if e := a.engine.Load(); e != nil {
		e.Drain(false)
	}
	a.vipMu.Lock()
	if a.vip != nil {
		a.vip.rec.Wake()
	}
	a.vipMu.Unlock()
}
