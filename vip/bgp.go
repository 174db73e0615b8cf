package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// Values for the BGP timers the config layer should use (lab-findings.md,
// and TestBGPECMPWithBird): a silent node's route goes after 2-3 s (bird
// starts its hold timer at 75-100 % of HoldTime), and a session that
// failed is back 1.3-2 s after the path is (with bird's `error wait time
// 1, 5` on the router and the announcer's restart of failed sessions).
const (
	DefaultBGPHoldTime     = 3 * time.Second
	DefaultBGPKeepalive    = 1 * time.Second
	DefaultBGPConnectRetry = 1 * time.Second
)

// idleHoldTimeAfterReset is how long (seconds) gobgp stays idle after an
// administrative reset of a session (its default is 30 s).
//
// It does not cover a session that failed (hold timer expired, connection
// lost): gobgp v3.37.0 then stays idle for a fixed 5 s (holdtimeIdle in
// pkg/server/fsm.go), which made a node whose cable came back wait 6-7 s
// for its session. The announcer therefore re-creates a failed session
// itself (restartFailed), at most once per ConnectRetry.
const idleHoldTimeAfterReset = 1

// BGPPeer is a router the announcer opens a session to.
type BGPPeer struct {
	Address netip.Addr // IPv4
	ASN     uint32
	// Port is the peer's TCP port; 0 means BGP's port, 179.
	Port uint16
}

// BGPOptions configures NewBGPAnnouncer. The config layer fills in every
// field (see the Default* constants); Validate rejects what is missing.
type BGPOptions struct {
	LocalASN uint32
	RouterID netip.Addr // IPv4, usually the node's address
	// ListenPort is the port on which the speaker accepts sessions, or -1:
	// do not listen, only dial the peers (the usual case, the router being
	// passive or dialling nobody).
	ListenPort int
	Peers      []BGPPeer
	// HoldTime (whole seconds, at least 3 s) is how long a peer may stay
	// silent before its session, and its routes, are dropped. The session
	// uses the smaller of both ends' values.
	HoldTime time.Duration
	// Keepalive (whole seconds, at least 1 s, below HoldTime) is the
	// interval between KEEPALIVE messages.
	Keepalive time.Duration
	// ConnectRetry (whole seconds, at least 1 s) is the interval between
	// attempts to open a session.
	ConnectRetry time.Duration
	// NextHop is the address routers send VIP traffic to: this node's
	// address on the peers' segment (IPv4).
	NextHop netip.Addr
	// Inner holds the addresses on this node (a /32 on a dummy interface);
	// the BGP announcer owns it from now on and closes it in Close.
	Inner Announcer
	// Log receives the speaker's events; nil discards them.
	Log *slog.Logger
}

func wholeSeconds(d time.Duration) bool { return d%time.Second == 0 }

// Validate reports the first problem with o, or nil.
func (o BGPOptions) Validate() error {
	switch {
	case o.LocalASN == 0:
		return errors.New("vip: bgp: LocalASN is not set")
	case !o.RouterID.Is4():
		return fmt.Errorf("vip: bgp: RouterID must be an IPv4 address, got %v", o.RouterID)
	case o.ListenPort != -1 && (o.ListenPort < 1 || o.ListenPort > 65535):
		return fmt.Errorf("vip: bgp: ListenPort must be -1 (do not listen) or 1..65535, got %d", o.ListenPort)
	case len(o.Peers) == 0:
		return errors.New("vip: bgp: no peers")
	case o.HoldTime < 3*time.Second || o.HoldTime > 65535*time.Second || !wholeSeconds(o.HoldTime):
		return fmt.Errorf("vip: bgp: HoldTime must be whole seconds in 3s..65535s, got %v", o.HoldTime)
	case o.Keepalive < time.Second || o.Keepalive >= o.HoldTime || !wholeSeconds(o.Keepalive):
		return fmt.Errorf("vip: bgp: Keepalive must be whole seconds, at least 1s and below HoldTime (%v), got %v", o.HoldTime, o.Keepalive)
	case o.ConnectRetry < time.Second || o.ConnectRetry > 65535*time.Second || !wholeSeconds(o.ConnectRetry):
		return fmt.Errorf("vip: bgp: ConnectRetry must be whole seconds in 1s..65535s, got %v", o.ConnectRetry)
	case !o.NextHop.Is4():
		return fmt.Errorf("vip: bgp: NextHop must be an IPv4 address, got %v", o.NextHop)
	case o.Inner == nil:
		return errors.New("vip: bgp: no Inner announcer to hold the addresses")
	}
	seen := map[netip.Addr]bool{}
	for i, p := range o.Peers {
		switch {
		case !p.Address.Is4():
			return fmt.Errorf("vip: bgp: peer %d: Address must be an IPv4 address, got %v", i, p.Address)
		case p.ASN == 0:
			return fmt.Errorf("vip: bgp: peer %v: ASN is not set", p.Address)
		case seen[p.Address]:
			return fmt.Errorf("vip: bgp: peer %v listed twice", p.Address)
		}
		seen[p.Address] = true
	}
	return nil
}

// BGPAnnouncer is the active-active Announcer: Inner holds each VIP as a
// /32 on this node and an embedded BGP speaker (gobgp) announces it to the
// peers with this node as next hop; the routers spread flows over the
// nodes with ECMP.
//
// Order matters both ways: Claim holds the address before announcing it,
// and Release and Close withdraw the route, and wait until the withdrawal
// is written to every established session, before the address goes.
type BGPAnnouncer struct {
	opts BGPOptions
	srv  *server.BgpServer
	log  *slog.Logger

	stopWatch context.CancelFunc // ends the session restarter
	watchDone chan struct{}      // closed when it has ended

	mu     sync.Mutex              // serialises Claim, Release, Close and restarts
	routes map[netip.Prefix][]byte // announced VIP -> gobgp path UUID
	closed bool
}

var (
	_ Announcer  = (*BGPAnnouncer)(nil)
	_ Withdrawer = (*BGPAnnouncer)(nil)
)

// NewBGPAnnouncer validates opts, starts the speaker and configures the
// peers; sessions come up in the background. ctx bounds the start-up only:
// the announcer lives until Close.
//
// gobgp keeps a few package-level settings (route selection options) that
// every server in a process shares: run one BGPAnnouncer per process.
func NewBGPAnnouncer(ctx context.Context, opts BGPOptions) (*BGPAnnouncer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "bgp")
	srv := server.NewBgpServer(server.LoggerOption(newGoBGPLogger(log)))
	// Serve runs until the process ends: gobgp v3 has no way to stop it.
	// It only waits on channels once StopBgp has run.
	go srv.Serve()
	b := &BGPAnnouncer{opts: opts, srv: srv, log: log, routes: map[netip.Prefix][]byte{}, watchDone: make(chan struct{})}
	if err := b.start(ctx); err != nil {
		srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	b.stopWatch = cancel
	wake := make(chan struct{}, 1)
	err := srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe.GetType() != api.WatchEventResponse_PeerEvent_STATE || pe.GetPeer().GetState().GetSessionState() != api.PeerState_IDLE {
			return
		}
		select { // never block gobgp; the restarter re-reads every session
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		cancel()
		srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		return nil, fmt.Errorf("vip: bgp: watch sessions: %w", err)
	}
	go b.restarter(wctx, wake)
	return b, nil
}

// peerConfig is the gobgp configuration of one session.
func (b *BGPAnnouncer) peerConfig(p BGPPeer) *api.Peer {
	o := b.opts
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               uint64(o.HoldTime / time.Second),
			KeepaliveInterval:      uint64(o.Keepalive / time.Second),
			ConnectRetry:           uint64(o.ConnectRetry / time.Second),
			IdleHoldTimeAfterReset: idleHoldTimeAfterReset,
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family:  ipv4Unicast(),
			Enabled: true,
		}}},
	}
}

// restarter re-creates failed sessions (see idleHoldTimeAfterReset) when
// woken by a session going idle, until ctx ends.
func (b *BGPAnnouncer) restarter(ctx context.Context, wake <-chan struct{}) {
	defer close(b.watchDone)
	last := map[netip.Addr]time.Time{}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-timer.C:
		}
		if again := b.restartFailed(ctx, last); again > 0 {
			timer.Reset(again)
		}
	}
}

// restartFailed deletes and re-adds every idle session not restarted
// within ConnectRetry, so that it tries to connect at once rather than
// after gobgp's fixed 5 s. It returns when to look again (0: no need).
func (b *BGPAnnouncer) restartFailed(ctx context.Context, last map[netip.Addr]time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || ctx.Err() != nil {
		return 0
	}
	peers, err := b.Peers(ctx)
	if err != nil {
		b.log.Warn("listing bgp sessions", "err", err)
		return b.opts.ConnectRetry
	}
	var again time.Duration
	for _, ps := range peers {
		if ps.State != "idle" {
			continue
		}
		if wait := b.opts.ConnectRetry - time.Since(last[ps.Address]); wait > 0 {
			if again == 0 || wait < again {
				again = wait
			}
			continue
		}
		i := slices.IndexFunc(b.opts.Peers, func(p BGPPeer) bool { return p.Address == ps.Address })
		if i < 0 {
			continue
		}
		last[ps.Address] = time.Now()
		b.log.Info("bgp session failed; re-creating it to retry at once", "peer", ps.Address)
		if err := b.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: ps.Address.String()}); err != nil {
			b.log.Warn("re-creating bgp session: delete", "peer", ps.Address, "err", err)
			continue
		}
		if err := b.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: b.peerConfig(b.opts.Peers[i])}); err != nil {
			// Not retried here: the session stays unconfigured until
			// the announcer is recreated. gobgp only fails on invalid
			// configuration, which worked a moment ago.
			b.log.Error("re-creating bgp session: add", "peer", ps.Address, "err", err)
		}
	}
	return again
}

func (b *BGPAnnouncer) start(ctx context.Context) error {
	o := b.opts
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        o.LocalASN,
		RouterId:   o.RouterID.String(),
		ListenPort: int32(o.ListenPort),
	}})
	if err != nil {
		return fmt.Errorf("vip: bgp: start: %w", err)
	}
	for _, p := range o.Peers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := b.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: b.peerConfig(p)}); err != nil {
			return fmt.Errorf("vip: bgp: peer %v: %w", p.Address, err)
		}
	}
	b.log.Info("bgp speaker started", "asn", o.LocalASN, "router_id", o.RouterID, "next_hop", o.NextHop,
		"peers", len(o.Peers), "hold", o.HoldTime, "keepalive", o.Keepalive)
	return nil
}

// hostRoute checks that addr is an IPv4 /32 (the only kind announced).
func hostRoute(addr netip.Prefix) error {
	if !addr.Addr().Is4() || addr.Bits() != 32 {
		return fmt.Errorf("vip: bgp: %v: only IPv4 /32 VIPs can be announced", addr)
	}
	return nil
}

func ipv4Unicast() *api.Family {
	return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
}

// path is the route for addr: ORIGIN IGP, NEXT_HOP this node.
func (b *BGPAnnouncer) path(addr netip.Prefix) (*api.Path, error) {
	nlri := bgp.NewIPAddrPrefix(32, addr.Addr().String())
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeNextHop(b.opts.NextHop.String()),
	}
	return apiutil.NewPath(nlri, false, attrs, time.Now())
}

// Claim holds addr (an IPv4 /32) through Inner, then announces it. Claiming
// an address already held announces it again.
func (b *BGPAnnouncer) Claim(ctx context.Context, addr netip.Prefix) error {
	if err := hostRoute(addr); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if err := b.opts.Inner.Claim(ctx, addr); err != nil {
		return err
	}
	p, err := b.path(addr)
	if err != nil {
		return fmt.Errorf("vip: bgp: route for %v: %w", addr, err)
	}
	resp, err := b.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
	if err != nil {
		return fmt.Errorf("vip: bgp: announce %v: %w", addr, err)
	}
	b.routes[addr] = resp.Uuid
	b.log.Info("vip announced", "vip", addr, "next_hop", b.opts.NextHop)
	return nil
}

// Release withdraws addr's route, waits until the withdrawal is on every
// established session (at most HoldTime: a peer that has not heard from
// us for that long has dropped the session and the route anyway), and
// only then has Inner remove the address. After Close it only passes the
// call to Inner.
func (b *BGPAnnouncer) Release(ctx context.Context, addr netip.Prefix) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.withdrawLocked(ctx, addr); err != nil {
		return err
	}
	return b.opts.Inner.Release(ctx, addr)
}

// Withdraw stops announcing addr but keeps the address, so connections
// the router already sent here can finish (a drain); Release then
// removes it. Claim announces it again.
func (b *BGPAnnouncer) Withdraw(ctx context.Context, addr netip.Prefix) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.withdrawLocked(ctx, addr)
}

func (b *BGPAnnouncer) withdrawLocked(ctx context.Context, addr netip.Prefix) error {
	if id, ok := b.routes[addr]; ok && !b.closed {
		start := time.Now()
		before := b.sentUpdates(ctx)
		err := b.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast(), Uuid: id})
		if err != nil {
			return fmt.Errorf("vip: bgp: withdraw %v: %w", addr, err)
		}
		delete(b.routes, addr)
		pending := b.waitSent(ctx, before)
		b.log.Info("vip withdrawn", "vip", addr, "took", time.Since(start), "unconfirmed_peers", pending)
	}
	return nil
}

// Held lists the addresses Inner holds (read from the system).
func (b *BGPAnnouncer) Held() ([]netip.Prefix, error) { return b.opts.Inner.Held() }

// Close withdraws every route, waits (at most HoldTime) until the
// withdrawals are written, then ends the sessions with a CEASE
// notification and stops the speaker, and closes Inner. The addresses stay
// (the reconcile loop removes them). Close is idempotent.
func (b *BGPAnnouncer) Close() error {
	b.stopWatch() // before taking mu: a restart in progress holds it
	<-b.watchDone
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.HoldTime)
	defer cancel()
	var errs []error
	if len(b.routes) > 0 {
		start := time.Now()
		before := b.sentUpdates(ctx)
		// No path and no UUID: every locally originated path of the family.
		err := b.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast()})
		if err != nil {
			errs = append(errs, fmt.Errorf("vip: bgp: withdraw all: %w", err))
		} else {
			pending := b.waitSent(ctx, before)
			b.log.Info("all vips withdrawn", "vips", len(b.routes), "took", time.Since(start), "unconfirmed_peers", pending)
		}
		clear(b.routes)
	}
	if err := b.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
		errs = append(errs, fmt.Errorf("vip: bgp: stop: %w", err))
	}
	b.log.Info("bgp speaker stopped")
	if err := b.opts.Inner.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// BGPPeerStatus is one session as the speaker sees it.
type BGPPeerStatus struct {
	Address netip.Addr
	ASN     uint32
	// State is the BGP FSM state: "idle", "connect", "active", "opensent",
	// "openconfirm" or "established".
	State string
	// Since is when the session was last established (zero if never).
	Since time.Time
}

// Established reports whether the session is up.
func (s BGPPeerStatus) Established() bool { return s.State == "established" }

var sessionStates = map[api.PeerState_SessionState]string{
	api.PeerState_UNKNOWN:     "unknown",
	api.PeerState_IDLE:        "idle",
	api.PeerState_CONNECT:     "connect",
	api.PeerState_ACTIVE:      "active",
	api.PeerState_OPENSENT:    "opensent",
	api.PeerState_OPENCONFIRM: "openconfirm",
	api.PeerState_ESTABLISHED: "established",
}

// Peers reports the state of every configured session, sorted by address.
func (b *BGPAnnouncer) Peers(ctx context.Context) ([]BGPPeerStatus, error) {
	var out []BGPPeerStatus
	err := b.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		st := BGPPeerStatus{State: "unknown"}
		if c := p.GetConf(); c != nil {
			st.Address, _ = netip.ParseAddr(c.NeighborAddress)
			st.ASN = c.PeerAsn
		}
		if s := p.GetState(); s != nil {
			if name, ok := sessionStates[s.SessionState]; ok {
				st.State = name
			}
		}
		if t := p.GetTimers().GetState().GetUptime(); t != nil && st.Established() {
			st.Since = t.AsTime()
		}
		out = append(out, st)
	})
	slices.SortFunc(out, func(a, b BGPPeerStatus) int { return a.Address.Compare(b.Address) })
	return out, err
}

// sessionMark identifies a session and counts the UPDATEs written to it.
type sessionMark struct {
	since   time.Time
	updates uint64
}

// sentUpdates returns, for every established session, when it came up
// and how many UPDATE messages have been written to it.
func (b *BGPAnnouncer) sentUpdates(ctx context.Context) map[string]sessionMark {
	m := map[string]sessionMark{}
	b.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		s := p.GetState()
		if s.GetSessionState() != api.PeerState_ESTABLISHED {
			return
		}
		var since time.Time
		if t := p.GetTimers().GetState().GetUptime(); t != nil {
			since = t.AsTime()
		}
		m[p.GetConf().GetNeighborAddress()] = sessionMark{since: since, updates: s.GetMessages().GetSent().GetUpdate()}
	})
	return m
}

// flushPoll is how often waitSent looks at the sessions' counters.
const flushPoll = 2 * time.Millisecond

// waitSent waits until every session in before has had another UPDATE
// written to it (gobgp counts a message once conn.Write returned), or is
// no longer the same established session, or HoldTime or ctx ends. It
// returns the peers not confirmed.
func (b *BGPAnnouncer) waitSent(ctx context.Context, before map[string]sessionMark) []string {
	ctx, cancel := context.WithTimeout(ctx, b.opts.HoldTime)
	defer cancel()
	t := time.NewTicker(flushPoll)
	defer t.Stop()
	for {
		now := b.sentUpdates(ctx)
		var pending []string
		for addr, m := range before {
			if n, ok := now[addr]; ok && n.since.Equal(m.since) && n.updates <= m.updates {
				pending = append(pending, addr)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			slices.Sort(pending)
			b.log.Warn("withdrawal not confirmed on every session", "peers", pending, "err", ctx.Err())
			return pending
		case <-t.C:
		}
	}
}
