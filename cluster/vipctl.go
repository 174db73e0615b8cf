package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/proxy"
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
	// finishing: a planned hand-over is letting the connections this node
	// has finish (new ones are refused) before the address goes. The
	// ownership rule still runs, but the hand-over does not count as
	// unfitness yet: a holder keeps holding, a non-holder does not start.
	finishing atomic.Bool
	tbOK      atomic.Bool // the tiebreaker answers
	lastHold  atomic.Bool
	// lastDegraded: the last hold was granted without quorum; decidedAt
	// (unix nanos) is when the rule last ran.
	lastDegraded atomic.Bool
	decidedAt    atomic.Int64

	mu        sync.Mutex
	lastWhy   string
	holdSince time.Time

	// handMu serialises the hand-overs of this node: drain and SIGTERM
	// (handOver) wait for it, the health and priority check (watchOwner)
	// skips its pass while another hand-over runs.
	handMu sync.Mutex
	// yielding: a health or priority hand-over is moving the VIP away, so
	// the reconcile pass releases it although the proxy is fit.
	yielding atomic.Bool
	// ownerWake wakes watchOwner (gossip and leadership changes).
	ownerWake chan struct{}
	// lastHandOver is when watchOwner last started a hand-over; only it
	// touches the field.
	lastHandOver time.Time
	seen         fitTracker

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
	c := &vipControl{a: a, m: m, spec: spec, ownerWake: make(chan struct{}, 1)}
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
	if spec.Mode == state.VIPModeActivePassive {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.watchOwner(ctx)
		}()
	}
	// Re-announce (not only re-check) on every leadership or membership
	// change: a returning peer may have missed the last GARP. The same
	// events make the leader check whether another node should own the VIP.
	m.node.setOnChange(func(membership bool) {
		if membership {
			c.rec.Kick()
		} else {
			c.rec.Wake() // metadata only (this node's own included): no GARP
		}
		c.pokeOwner()
	})
	a.log.Info("VIP control started", "mode", spec.Mode, "addresses", spec.Addresses)
	return c, nil
}

func (c *vipControl) announcer() (vip.Announcer, error) {
	if f := c.a.nodeOpts.VIPAnnouncer; f != nil {
		return f(c.spec)
	}
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
func (c *vipControl) stop() { c.stopKeeping(nil) }

// stopKeeping stops VIP control, releasing every VIP it holds but those in
// keep: a config change that keeps an address does not drop it (the next
// control finds it held and carries on).
func (c *vipControl) stopKeeping(keep []netip.Prefix) {
	c.forced.Store(false)
	c.m.node.setOnChange(nil)
	c.cancel()
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held, _ := c.ann.Held()
	for _, p := range held {
		if slices.Contains(keep, p) {
			continue
		}
		if err := c.ann.Release(ctx, p); err != nil {
			c.a.log.Warn("release VIP at stop", "vip", p, "err", err)
		}
	}
	c.ann.Close()
	c.m.node.setHoldsVIP(false, time.Time{}, time.Time{})
	// Without VIP control this node cannot take the VIP: no leader may
	// hand it over here.
	c.m.node.setFit(false, time.Now())
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
	fit := c.a.fit()
	// Published for the leader's hand-over check; asynchronous, so this
	// pass never waits on gossip.
	n.setFit(fit, time.Now())
	in := OwnershipInput{
		Self:              c.a.cfg.Node.Name,
		Mode:              c.spec.Mode,
		WithoutQuorum:     c.spec.WithoutQuorumRule(voters),
		Voters:            voters,
		Quorum:            leaderID != "",
		Leader:            leader,
		LeaseOK:           n.raft.raft.State() == raft.Leader,
		BarrierDone:       n.barrierOK.Load(),
		Fit:               fit && !c.yielding.Load() || c.finishing.Load() && c.lastHold.Load(),
		Holding:           c.lastHold.Load(),
		HolderDead:        !c.lastHold.Load() && n.holderDead(), // on the holder: only its own death counts (not known yet)
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
	since := c.holdSince
	c.mu.Unlock()
	n.setHoldsVIP(d.Hold, since, c.rec.Status().LastAnnounce)
	if !d.Hold {
		return nil
	}
	return c.spec.Prefixes()
}

// VIPStatus is `fulcrum vip status`: this node's reconcile loop.
type VIPStatus struct {
	Mode      string   `json:"mode"`
	Addresses []string `json:"addresses,omitempty"`
	// WithoutQuorum is the rule in force when the cluster loses quorum
	// (active-passive: release or tiebreaker, auto resolved).
	WithoutQuorum string              `json:"without_quorum,omitempty"`
	Hold          bool                `json:"hold"`
	Reason        string              `json:"reason"`
	Since         time.Time           `json:"since,omitzero"`
	Forced        bool                `json:"forced"`
	Reconcile     vip.ReconcileStatus `json:"reconcile"`
}

func (c *vipControl) status() VIPStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := VIPStatus{Mode: c.spec.Mode, Addresses: c.spec.Addresses, Hold: c.lastHold.Load(), Reason: c.lastWhy,
		Since: c.holdSince, Forced: c.forced.Load(), Reconcile: c.rec.Status()}
	if c.spec.Mode == state.VIPModeActivePassive {
		st.WithoutQuorum = c.spec.WithoutQuorumRule(c.m.node.voters())
	}
	return st
}

// fit reports whether this node's proxy can take the VIP: its data plane
// runs the committed config and it is not draining.
func (a *Agent) fit() bool { return a.unfitReason() == "" }

// unfitReason says why this node's proxy cannot take the VIP ("": fit).
func (a *Agent) unfitReason() string {
	switch {
	case a.draining.Load():
		return "draining"
	case a.handingOver.Load():
		return "handing over"
	}
	m := a.member.Load()
	if m == nil {
		return ""
	}
	if e := m.node.applyErr(); e != "" {
		return "committed config not in service: " + e
	}
	return ""
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
	var verified int64
	if old := a.vip; old != nil {
		from, _ := json.Marshal(old.spec)
		to, _ := json.Marshal(spec)
		a.log.Info("vip section changed: restarting VIP control", "from", string(from), "to", string(to))
		// An active-passive address that the new spec keeps stays put
		// through the restart, and so does the confirmed lease.
		var keep []netip.Prefix
		if old.spec.Mode == state.VIPModeActivePassive && spec.Mode == old.spec.Mode && old.lastHold.Load() {
			keep = spec.Prefixes()
			verified = old.verified.Load()
		}
		old.stopKeeping(keep)
		a.vip = nil
	}
	c, err := a.startVIP(m, spec)
	if err != nil {
		a.log.Error("VIP control not started", "err", err)
		return
	}
	if c != nil {
		c.verified.Store(verified)
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
	a.beginFinishing()
	a.draining.Store(true)
	return a.handOver(ctx)
}

// beginFinishing marks this node's VIP control as finishing (see
// vipControl.finishing) before a drain or a stop makes the node unfit, so
// that no reconcile pass drops the address before the connections on it
// have finished. releaseAndTransfer ends it.
func (a *Agent) beginFinishing() {
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.vip != nil {
		a.vip.finishing.Store(true)
	}
}

// handOver is the planned failover of drain and SIGTERM (see
// releaseAndTransfer): leadership moves to the preferred fit voter when
// gossip shows one, else to whichever Raft picks.
func (a *Agent) handOver(ctx context.Context) error {
	a.beginFinishing()
	a.handingOver.Store(true)
	a.vipMu.Lock()
	c := a.vip
	a.vipMu.Unlock()
	var to *handOverPeer
	if c != nil {
		// After a health or priority hand-over in progress, if any.
		c.handMu.Lock()
		defer c.handMu.Unlock()
		if plan, ok := c.target(time.Now()); ok && c.m.node.isLeader() {
			a.log.Info("handing leadership and the VIP over", "to", plan.To.Name, "reason", plan.Reason)
			to = &plan.To
		}
	}
	return a.releaseAndTransfer(ctx, c, to)
}

// releaseAndTransfer is the planned hand-over, with the caller having made
// the node unfit and c finishing: stop reusing keep-alive connections,
// refuse new connections for the VIP (dropped SYNs, which clients
// retransmit to the new holder), withdraw the routes (active-active), let
// the connections already open finish (at most vip.handover_timeout), drop
// the address, then transfer Raft leadership to the voter to (nil:
// whichever Raft picks); the new leader claims and announces the VIP.
func (a *Agent) releaseAndTransfer(ctx context.Context, c *vipControl, to *handOverPeer) error {
	e := a.engine.Load()
	if e != nil {
		e.Drain(true)
	}
	if c != nil {
		if e != nil {
			var addrs []netip.Addr
			for _, p := range c.spec.Prefixes() {
				addrs = append(addrs, p.Addr())
			}
			if err := e.Refuse(addrs); err != nil {
				a.log.Warn("refuse new connections for the VIP", "err", err)
			}
			defer func() {
				if err := e.Refuse(nil); err != nil {
					a.log.Warn("stop refusing connections for the VIP", "err", err)
				}
			}()
		}
		c.withdraw(ctx)
		if e != nil {
			finish(ctx, e, c.spec.HandOverWait())
		}
		c.finishing.Store(false)
		c.rec.Kick()
		deadline := time.Now().Add(time.Second)
		for (c.lastHold.Load() || len(c.rec.Status().Actual) > 0) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	m := a.member.Load()
	if m == nil || !m.node.isLeader() || m.node.voters() < 2 {
		return nil
	}
	if to == nil {
		if err := m.node.raft.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("hand leadership over: %w", err)
		}
		return nil
	}
	f := m.node.raft.raft.LeadershipTransferToServer(raft.ServerID(to.ID), raft.ServerAddress(to.RaftAddr))
	if err := f.Error(); err != nil {
		return fmt.Errorf("hand leadership over to %s: %w", to.Name, err)
	}
	return nil
}

// handshakeGrace is how long a hand-over gives the handshakes begun
// before the refusal to complete (a LAN round trip or a few): until then
// such a connection is visible neither as a connection nor in the accept
// queue, and its request would be lost when the address moves.
const handshakeGrace = 50 * time.Millisecond

// finish waits, at most wait, for the connections e has, including those
// in the kernel's accept queues and the handshakes in progress, to end.
func finish(ctx context.Context, e *proxy.Engine, wait time.Duration) {
	deadline := time.Now().Add(wait)
	grace := time.NewTimer(min(handshakeGrace, wait))
	defer grace.Stop()
	select {
	case <-grace.C:
	case <-ctx.Done():
		return
	}
	for !e.Idle() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// withdraw withdraws the routes of the VIPs this node announces
// (active-active), so that the router sends new flows elsewhere; the /32s
// stay while the connections the router already sent here finish (a reply
// from an address the node no longer holds is dropped).
func (c *vipControl) withdraw(ctx context.Context) {
	w, ok := c.withdrawer()
	if !ok {
		return
	}
	held, _ := c.ann.Held()
	for _, p := range held {
		if err := w.Withdraw(ctx, p); err != nil {
			c.a.log.Warn("withdraw VIP route", "vip", p, "err", err)
		}
	}
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

// Health follows the VIP (active-passive): the leader holds the VIP, so a
// leader whose proxy is unfit, or a leader that a fit node of higher
// priority has outranked for preempt_delay, hands leadership over with the
// planned-failover sequence. watchOwner runs on every node (it keeps
// fitTracker current) and acts on the leader only.

// ownerResync bounds how late the leader notices, when nothing woke it,
// that a preferred node's preempt_delay is up.
const ownerResync = 250 * time.Millisecond

// minHandOverGap: a node starts at most one health or priority hand-over
// per this period (per preempt_delay when that is longer, for a priority
// hand-over), so that ownership cannot flap between nodes whose fitness
// flaps.
const minHandOverGap = 3 * time.Second

// handOverPeer is another voter as the leader sees it: gossip's view of
// its priority and fitness, and where Raft reaches it.
type handOverPeer struct {
	Candidate
	// ID and RaftAddr are the voter's Raft identity, from the Raft
	// configuration.
	ID       string
	RaftAddr string
	// Alive: gossip sees the node alive (not suspect, dead or left).
	Alive bool
	// Witness: the node votes but serves no traffic.
	Witness bool
	// Applied is the config version its data plane runs.
	Applied uint64
}

// handOverInput is what the leader knows when it asks whether another
// node should own the VIP.
type handOverInput struct {
	// Self is the leader, from its own state (not from gossip).
	Self Candidate
	// Applied is the config version the leader's data plane runs: a peer
	// that runs an older one has not caught up and is not a target.
	Applied uint64
	// Peers are the other voters.
	Peers        []handOverPeer
	Now          time.Time
	PreemptDelay time.Duration
}

// handOverPlan is the answer: hand leadership to To, for Reason.
type handOverPlan struct {
	To     handOverPeer
	Reason string
	// Preempt: the leader is fit and gives way to a node of higher
	// priority (false: the leader is unfit).
	Preempt bool
}

// handOverTarget decides whether the leader should hand leadership (and
// with it the VIP) to another voter, and to whom: PreferredOwner over the
// leader and the peers that may take the VIP — alive in gossip, fit, not a
// witness, with a Raft identity, running the leader's config version or a
// newer one. It is pure.
func handOverTarget(in handOverInput) (handOverPlan, bool) {
	cands := []Candidate{in.Self}
	eligible := map[string]handOverPeer{}
	for _, p := range in.Peers {
		switch {
		case !p.Alive || !p.Fit || p.Witness, p.Name == "" || p.Name == in.Self.Name,
			p.ID == "" || p.RaftAddr == "", p.Applied < in.Applied:
			continue
		}
		if _, dup := eligible[p.Name]; dup {
			continue
		}
		eligible[p.Name] = p
		cands = append(cands, p.Candidate)
	}
	best := PreferredOwner(cands, in.Self.Name, in.Now, in.PreemptDelay)
	to, ok := eligible[best]
	if !ok {
		return handOverPlan{}, false
	}
	if !in.Self.Fit {
		return handOverPlan{To: to, Reason: fmt.Sprintf("this node is unfit; %s is the preferred fit node (priority %d)",
			to.Name, to.Priority)}, true
	}
	return handOverPlan{To: to, Preempt: true, Reason: fmt.Sprintf(
		"%s has a higher priority (%d, this node %d) and has been fit for %s (preempt_delay %s)",
		to.Name, to.Priority, in.Self.Priority, in.Now.Sub(to.HealthySince).Round(time.Millisecond), in.PreemptDelay)}, true
}

// fitTracker remembers when this node first saw each peer fit in the
// peer's current fit period. A peer counts as fit since the later of the
// time it publishes and the time this node first saw it fit, so that a
// peer whose clock runs ahead cannot shorten preempt_delay (a leader
// elected meanwhile waits a little longer, never less).
type fitTracker struct {
	mu sync.Mutex
	m  map[string]fitSeen
}

type fitSeen struct {
	published int64 // the peer's HealthySince
	first     time.Time
}

// since records a peer's fitness as seen now and returns since when it
// counts as fit (zero: not fit, or unknown).
func (t *fitTracker) since(name string, fit bool, published int64, now time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !fit || published == 0 {
		delete(t.m, name)
		return time.Time{}
	}
	if t.m == nil {
		t.m = map[string]fitSeen{}
	}
	s, ok := t.m[name]
	if !ok || s.published != published {
		s = fitSeen{published: published, first: now}
		t.m[name] = s
	}
	if p := time.Unix(0, published); p.After(s.first) {
		return p
	}
	return s.first
}

// keepOnly forgets the peers not named (removed nodes).
func (t *fitTracker) keepOnly(names map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name := range t.m {
		if !names[name] {
			delete(t.m, name)
		}
	}
}

// target gathers the hand-over input (this node, and the other voters as
// gossip shows them) and decides. It also keeps fitTracker current.
func (c *vipControl) target(now time.Time) (handOverPlan, bool) {
	n := c.m.node
	meta := n.ownMeta()
	self := Candidate{Name: c.a.cfg.Node.Name, Priority: meta.VIPPriority, Fit: c.a.fit()}
	if meta.HealthySince != 0 {
		self.HealthySince = time.Unix(0, meta.HealthySince)
	}
	in := handOverInput{Self: self, Applied: meta.Applied, Now: now, PreemptDelay: c.spec.PreemptAfter()}
	f := n.raft.raft.GetConfiguration()
	if f.Error() != nil {
		return handOverPlan{}, false
	}
	byID := map[string]Member{}
	for _, m := range n.gossip.members() {
		if m.Meta.ID != "" {
			byID[m.Meta.ID] = m
		}
	}
	names := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		m, ok := byID[string(s.ID)]
		if s.Suffrage != raft.Voter || string(s.ID) == n.rec.NodeID || !ok {
			continue
		}
		names[m.Name] = true
		alive := m.State == "alive"
		in.Peers = append(in.Peers, handOverPeer{
			Candidate: Candidate{Name: m.Name, Priority: m.Meta.VIPPriority, Fit: m.Meta.Fit,
				HealthySince: c.seen.since(m.Name, alive && m.Meta.Fit, m.Meta.HealthySince, now)},
			ID: string(s.ID), RaftAddr: string(s.Address), Alive: alive, Witness: m.Meta.Role == "witness",
			Applied: m.Meta.Applied,
		})
	}
	c.seen.keepOnly(names)
	return handOverTarget(in)
}

// pokeOwner wakes watchOwner without blocking.
func (c *vipControl) pokeOwner() {
	select {
	case c.ownerWake <- struct{}{}:
	default:
	}
}

// watchOwner is the leader's level-triggered health and priority check:
// woken by gossip and leadership changes, and every ownerResync.
func (c *vipControl) watchOwner(ctx context.Context) {
	t := time.NewTicker(ownerResync)
	defer t.Stop()
	for {
		c.checkOwner(ctx)
		select {
		case <-ctx.Done():
			return
		case <-c.ownerWake:
		case <-t.C:
		}
	}
}

// checkOwner hands leadership over when this node leads, its state is
// current, and another node should own the VIP: exactly like a planned
// failover (see releaseAndTransfer), at most once per minHandOverGap (per
// preempt_delay for a priority hand-over).
func (c *vipControl) checkOwner(ctx context.Context) {
	now := time.Now()
	plan, ok := c.target(now)
	n := c.m.node
	if !ok || !n.isLeader() || !n.barrierOK.Load() || ctx.Err() != nil {
		return
	}
	gap := minHandOverGap
	if d := c.spec.PreemptAfter(); plan.Preempt && d > gap {
		gap = d
	}
	if !c.lastHandOver.IsZero() && now.Sub(c.lastHandOver) < gap {
		return
	}
	if !c.handMu.TryLock() {
		return // a drain or a stop is handing over
	}
	defer c.handMu.Unlock()
	if !n.isLeader() {
		return
	}
	c.lastHandOver = now
	log := c.a.log.With("component", "vip")
	attrs := []any{"to", plan.To.Name, "reason", plan.Reason}
	if why := c.a.unfitReason(); why != "" {
		attrs = append(attrs, "unfit", why)
	}
	log.Info("handing leadership and the VIP over", attrs...)
	c.finishing.Store(true)
	c.yielding.Store(true)
	err := c.a.releaseAndTransfer(ctx, c, &plan.To)
	c.yielding.Store(false)
	// The proxy is fit: keep-alive reuse comes back, unless a drain or a
	// stop began meanwhile (they wait for handMu, which is still held).
	if e := c.a.engine.Load(); e != nil && !c.a.draining.Load() && !c.a.handingOver.Load() {
		e.Drain(false)
	}
	c.rec.Wake()
	if err != nil {
		log.Warn("hand-over failed; this node keeps leadership", "to", plan.To.Name, "err", err)
	}
}

// withdrawer returns the announcer's withdraw step (BGP), if it has one.
func (c *vipControl) withdrawer() (vip.Withdrawer, bool) {
	if c == nil {
		return nil, false
	}
	w, ok := c.ann.(vip.Withdrawer)
	return w, ok
}
