package cluster

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
	"github.com/fulcrum-lb/fulcrum/vip"
)

func TestHandOverTarget(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	delay := 30 * time.Second
	long := now.Add(-time.Hour)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	peer := func(name string, prio int, fit bool, since time.Time) handOverPeer {
		return handOverPeer{Candidate: Candidate{Name: name, Priority: prio, Fit: fit, HealthySince: since},
			ID: "id-" + name, RaftAddr: name + ":7000", Alive: true, Applied: 7}
	}
	with := func(p handOverPeer, f func(*handOverPeer)) handOverPeer { f(&p); return p }
	fitSelf := Candidate{Name: "lead", Priority: 100, Fit: true, HealthySince: long}
	unfitSelf := Candidate{Name: "lead", Priority: 100}

	tests := []struct {
		name    string
		self    Candidate
		peers   []handOverPeer
		delay   time.Duration
		want    string // "" = keep leadership
		preempt bool
	}{
		{"fit leader, no better peer", fitSelf, []handOverPeer{peer("b", 100, true, long), peer("c", 50, true, long)}, delay, "", false},
		{"fit leader, no peers", fitSelf, nil, delay, "", false},
		{"unfit leader to the best fit peer", unfitSelf, []handOverPeer{peer("b", 100, true, long), peer("c", 150, true, now)}, delay, "c", false},
		{"unfit leader, unfit peers", unfitSelf, []handOverPeer{peer("b", 100, false, long), peer("c", 150, false, long)}, delay, "", false},
		{"unfit leader skips a peer gossip does not see alive", unfitSelf, []handOverPeer{
			with(peer("c", 150, true, long), func(p *handOverPeer) { p.Alive = false }), peer("b", 100, true, long)}, delay, "b", false},
		{"unfit leader never to a witness", unfitSelf, []handOverPeer{
			with(peer("w", 255, true, long), func(p *handOverPeer) { p.Witness = true })}, delay, "", false},
		{"unfit leader skips a peer behind on the config", unfitSelf, []handOverPeer{
			with(peer("c", 150, true, long), func(p *handOverPeer) { p.Applied = 6 }), peer("b", 100, true, long)}, delay, "b", false},
		{"a peer ahead on the config is fine", unfitSelf, []handOverPeer{
			with(peer("c", 150, true, long), func(p *handOverPeer) { p.Applied = 8 })}, delay, "c", false},
		{"unfit leader skips a peer without a Raft address", unfitSelf, []handOverPeer{
			with(peer("c", 150, true, long), func(p *handOverPeer) { p.RaftAddr = "" }), peer("b", 100, true, long)}, delay, "b", false},
		{"a peer named like the leader is ignored", unfitSelf, []handOverPeer{peer("lead", 150, true, long)}, delay, "", false},
		{"higher priority before the delay", fitSelf, []handOverPeer{peer("b", 200, true, ago(delay-time.Millisecond))}, delay, "", false},
		{"higher priority at the delay", fitSelf, []handOverPeer{peer("b", 200, true, ago(delay))}, delay, "b", true},
		{"higher priority but not alive", fitSelf, []handOverPeer{
			with(peer("b", 200, true, long), func(p *handOverPeer) { p.Alive = false })}, delay, "", false},
		{"higher priority but unfit", fitSelf, []handOverPeer{peer("b", 200, false, long)}, delay, "", false},
		{"higher priority, unknown healthy-since", fitSelf, []handOverPeer{peer("b", 200, true, time.Time{})}, delay, "", false},
		{"delay 0 never preempts", fitSelf, []handOverPeer{peer("b", 200, true, long)}, 0, "", false},
		{"delay 0: an unfit leader still hands over", unfitSelf, []handOverPeer{peer("b", 200, true, now)}, 0, "b", false},
		{"wait for the best, not a middle node", fitSelf, []handOverPeer{peer("a", 200, true, ago(time.Second)), peer("m", 150, true, long)}, delay, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, ok := handOverTarget(handOverInput{Self: tc.self, Applied: 7, Peers: tc.peers, Now: now, PreemptDelay: tc.delay})
			got := ""
			if ok {
				got = plan.To.Name
			}
			if got != tc.want {
				t.Fatalf("hand over to %q (%s), want %q", got, plan.Reason, tc.want)
			}
			if !ok {
				return
			}
			if plan.Preempt != tc.preempt || plan.Reason == "" {
				t.Errorf("plan %+v, want preempt %v and a reason", plan, tc.preempt)
			}
			if plan.To.ID != "id-"+tc.want || plan.To.RaftAddr != tc.want+":7000" {
				t.Errorf("target identity %q %q", plan.To.ID, plan.To.RaftAddr)
			}
		})
	}
}

// TestFitTracker: a peer counts as fit since the later of the time it
// publishes and the time this node first saw it fit; a new fit period (or
// an unfit sample) starts over.
func TestFitTracker(t *testing.T) {
	var tr fitTracker
	t0 := time.Unix(1_700_000_000, 0)
	// The peer publishes a time 10s before we first see it fit (its clock
	// runs behind ours): our first sighting counts.
	pub := t0.Add(-10 * time.Second).UnixNano()
	if got := tr.since("b", true, pub, t0); !got.Equal(t0) {
		t.Errorf("first sighting: %v, want %v", got, t0)
	}
	if got := tr.since("b", true, pub, t0.Add(5*time.Second)); !got.Equal(t0) {
		t.Errorf("same fit period: %v, want %v", got, t0)
	}
	// Its clock runs ahead: the published time counts.
	ahead := t0.Add(20 * time.Second)
	if got := tr.since("c", true, ahead.UnixNano(), t0); !got.Equal(ahead) {
		t.Errorf("peer ahead: %v, want %v", got, ahead)
	}
	// A new fit period (the peer flapped between two samples).
	t1 := t0.Add(8 * time.Second)
	if got := tr.since("b", true, t1.Add(-time.Second).UnixNano(), t1); !got.Equal(t1) {
		t.Errorf("new fit period: %v, want %v", got, t1)
	}
	// Unfit forgets.
	if got := tr.since("b", false, 0, t1); !got.IsZero() {
		t.Errorf("unfit: %v", got)
	}
	t2 := t1.Add(time.Second)
	if got := tr.since("b", true, t1.Add(-time.Second).UnixNano(), t2); !got.Equal(t2) {
		t.Errorf("fit again after an unfit sample: %v, want %v", got, t2)
	}
	if got := tr.since("d", true, 0, t2); !got.IsZero() {
		t.Errorf("unknown healthy-since: %v", got)
	}
	tr.keepOnly(map[string]bool{"c": true})
	if _, ok := tr.m["b"]; ok || len(tr.m) != 1 {
		t.Errorf("keepOnly left %v", tr.m)
	}
}

// fakeLAN stands for the segment the VIP lives on: each node's fake
// announcer holds addresses in memory. It records every claim and any
// moment with two holders.
type fakeLAN struct {
	mu      sync.Mutex
	holders map[netip.Prefix]map[string]bool
	claims  []lanClaim
	overlap []string
}

type lanClaim struct {
	node string
	at   time.Time
}

func newFakeLAN() *fakeLAN { return &fakeLAN{holders: map[netip.Prefix]map[string]bool{}} }

func (l *fakeLAN) announcer(node string) func(state.VIP) (vip.Announcer, error) {
	return func(state.VIP) (vip.Announcer, error) { return &lanAnnouncer{lan: l, node: node}, nil }
}

// holders lists the nodes holding p.
func (l *fakeLAN) holdersOf(p netip.Prefix) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n := range l.holders[p] {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// claimsBy lists when node claimed an address at or after from.
func (l *fakeLAN) claimsBy(node string, from time.Time) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []time.Time
	for _, c := range l.claims {
		if c.node == node && !c.at.Before(from) {
			out = append(out, c.at)
		}
	}
	return out
}

func (l *fakeLAN) overlaps() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.overlap)
}

type lanAnnouncer struct {
	lan  *fakeLAN
	node string
}

func (a *lanAnnouncer) Claim(_ context.Context, p netip.Prefix) error {
	l := a.lan
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holders[p] == nil {
		l.holders[p] = map[string]bool{}
	}
	l.holders[p][a.node] = true
	l.claims = append(l.claims, lanClaim{node: a.node, at: time.Now()})
	if len(l.holders[p]) > 1 {
		var hs []string
		for n := range l.holders[p] {
			hs = append(hs, n)
		}
		slices.Sort(hs)
		l.overlap = append(l.overlap, p.String()+" held by "+strings.Join(hs, ", "))
	}
	return nil
}

func (a *lanAnnouncer) Release(_ context.Context, p netip.Prefix) error {
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	delete(a.lan.holders[p], a.node)
	return nil
}

func (a *lanAnnouncer) Held() ([]netip.Prefix, error) {
	a.lan.mu.Lock()
	defer a.lan.mu.Unlock()
	var out []netip.Prefix
	for p, hs := range a.lan.holders {
		if hs[a.node] {
			out = append(out, p)
		}
	}
	return out, nil
}

func (a *lanAnnouncer) Close() error { return nil }

var testVIP = netip.MustParsePrefix("10.0.0.100/24")

// vipLab is three agents with active-passive VIP control on a fake LAN.
type vipLab struct {
	lan  *fakeLAN
	cfgs []NodeConfig
	ras  []*runningAgent
}

// runVIPAgent is runAgent with the fake announcer of lan.
func runVIPAgent(t *testing.T, cfg NodeConfig, lan *fakeLAN) *runningAgent {
	t.Helper()
	return runAgentWith(t, cfg, testVIPLog(cfg.Node.Name),
		func(a *Agent) { a.nodeOpts.VIPAnnouncer = lan.announcer(cfg.Node.Name) })
}

// newVIPLab forms lb1 (leader), lb2, lb3 with the given VIP priorities and
// commits an active-passive VIP with preemptDelay.
func newVIPLab(t *testing.T, priorities [3]int, preemptDelay string) *vipLab {
	t.Helper()
	ctx := context.Background()
	l := &vipLab{lan: newFakeLAN()}
	for i, name := range []string{"lb1", "lb2", "lb3"} {
		cfg := testNodeConfig(t, name)
		cfg.VIP.Priority = priorities[i]
		l.cfgs = append(l.cfgs, cfg)
		l.ras = append(l.ras, runVIPAgent(t, cfg, l.lan))
	}
	res, err := l.ras[0].a.ClusterInit(ctx)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	for _, ra := range l.ras[1:] {
		if err := ra.a.ClusterJoin(ctx, apiAddr(l.cfgs[0]), res.Token); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	waitUntil(t, 10*time.Second, "three voters", func() bool { return l.node(0).voters() == 3 })
	doc := "vip:\n  mode: active-passive\n  addresses: [\"" + testVIP.String() + "\"]\n  preempt_delay: " + preemptDelay + "\n"
	if _, err := l.ras[0].a.ApplyConfig(ctx, doc, 0, 5*time.Second); err != nil {
		t.Fatalf("apply the vip section: %v", err)
	}
	l.waitFitInGossip(t)
	return l
}

// waitFitInGossip waits until every node sees every other node alive and
// fit in gossip, with its priority.
func (l *vipLab) waitFitInGossip(t *testing.T) {
	t.Helper()
	waitUntil(t, 10*time.Second, "every node to be fit in every node's gossip", func() bool {
		for i := range l.ras {
			fit := map[string]bool{}
			for _, m := range l.node(i).gossip.members() {
				fit[m.Name] = m.State == "alive" && m.Meta.Fit && m.Meta.HealthySince != 0
			}
			for j := range l.ras {
				if j != i && !fit[l.name(j)] {
					return false
				}
			}
		}
		return true
	})
}

func (l *vipLab) node(i int) *Node { return l.ras[i].a.member.Load().node }

func (l *vipLab) name(i int) string { return l.cfgs[i].Node.Name }

// leader returns the index of the agent that leads (-1: none).
func (l *vipLab) leader() int {
	for i, ra := range l.ras {
		if m := ra.a.member.Load(); m != nil && m.node.isLeader() {
			return i
		}
	}
	return -1
}

// holder returns the one node holding the VIP ("" for none, "a, b" for two).
func (l *vipLab) holder() string { return strings.Join(l.lan.holdersOf(testVIP), ", ") }

func (l *vipLab) waitHolder(t *testing.T, d time.Duration, want string) {
	t.Helper()
	waitUntil(t, d, want+" to hold the VIP", func() bool {
		return l.holder() == want && l.leader() >= 0 && l.name(l.leader()) == want
	})
}

// stays checks for d that want leads and holds the VIP.
func (l *vipLab) stays(t *testing.T, d time.Duration, want string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if h := l.holder(); h != want {
			t.Fatalf("the VIP moved to %q, want it to stay on %s", h, want)
		}
	}
}

func (l *vipLab) noOverlap(t *testing.T) {
	t.Helper()
	if o := l.lan.overlaps(); len(o) > 0 {
		t.Errorf("two holders: %v", o)
	}
}

// setUnfit makes node i's committed config fail (as when a listener could
// not bind), or clears the failure.
func (l *vipLab) setUnfit(i int, why string) {
	m := l.ras[i].a.member.Load()
	l.ras[i].a.mu.Lock()
	applied := m.applied
	l.ras[i].a.mu.Unlock()
	m.node.setApplied(applied, why)
}

// TestUnfitLeaderHandsOver: a leader whose proxy cannot run the committed
// config gives up the VIP and hands leadership to the preferred fit node
// (the highest priority), without two holders; once fit again it does not
// take the VIP back from a node of higher priority.
func TestUnfitLeaderHandsOver(t *testing.T) {
	l := newVIPLab(t, [3]int{100, 100, 150}, "30s")
	l.waitHolder(t, 10*time.Second, "lb1")

	l.setUnfit(0, "listener 10.0.0.100:80: bind: address already in use")
	l.waitHolder(t, 10*time.Second, "lb3")
	l.noOverlap(t)
	if m := l.node(0).ownMeta(); m.Fit || m.HealthySince != 0 {
		t.Errorf("unfit lb1 publishes fit %v since %d", m.Fit, m.HealthySince)
	}
	if l.ras[0].a.handingOver.Load() || l.ras[0].a.draining.Load() {
		t.Error("a health hand-over left lb1 handing over or draining")
	}

	l.setUnfit(0, "")
	l.waitFitInGossip(t)
	l.stays(t, 2*time.Second, "lb3")
	l.noOverlap(t)
}

// TestPreemptAfterDelay: a node of higher priority takes the VIP over once
// it has been fit for preempt_delay, not before: when the cluster forms,
// and again when it comes back after a restart.
func TestPreemptAfterDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	l := newVIPLab(t, [3]int{100, 100, 200}, "1500ms")
	since := time.Unix(0, l.node(2).ownMeta().HealthySince)
	l.waitHolder(t, delay+10*time.Second, "lb3")
	claims := l.lan.claimsBy("lb3", time.Time{})
	if len(claims) == 0 || claims[0].Sub(since) < delay {
		t.Fatalf("lb3 fit at %v claimed the VIP at %v, before preempt_delay %v", since, claims, delay)
	}
	l.noOverlap(t)

	// lb3 stops (hands over to lb1 or lb2) and comes back.
	l.ras[2].stop()
	waitUntil(t, 10*time.Second, "the VIP on lb1 or lb2", func() bool {
		h, i := l.holder(), l.leader()
		return (h == "lb1" || h == "lb2") && i >= 0 && l.name(i) == h
	})
	back := time.Now()
	l.ras[2] = runVIPAgent(t, l.cfgs[2], l.lan)
	waitUntil(t, 10*time.Second, "lb3 to be fit again", func() bool {
		m := l.ras[2].a.member.Load()
		return m != nil && m.node.ownMeta().Fit
	})
	since = time.Unix(0, l.node(2).ownMeta().HealthySince)
	l.waitHolder(t, delay+10*time.Second, "lb3")
	claims = l.lan.claimsBy("lb3", back)
	if len(claims) == 0 || claims[0].Sub(since) < delay {
		t.Fatalf("restarted lb3 fit at %v claimed the VIP at %v, before preempt_delay %v", since, claims, delay)
	}
	l.noOverlap(t)
}

// TestPreemptDelayZero: preempt_delay 0 never preempts for priority, but an
// unfit leader still hands over, to the fit node of highest priority.
func TestPreemptDelayZero(t *testing.T) {
	l := newVIPLab(t, [3]int{100, 100, 200}, "0s")
	l.waitHolder(t, 10*time.Second, "lb1")
	l.stays(t, 3*time.Second, "lb1")

	l.setUnfit(0, "listener failed")
	l.waitHolder(t, 10*time.Second, "lb3")
	l.noOverlap(t)
}

// testVIPLog discards the agents' logs unless FULCRUM_TEST_LOG is set.
func testVIPLog(name string) *slog.Logger {
	if os.Getenv("FULCRUM_TEST_LOG") == "" {
		return quietLog()
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", name)
}
