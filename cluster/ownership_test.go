package cluster

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

func TestDecideOwnershipTable(t *testing.T) {
	const (
		ap  = state.VIPModeActivePassive
		aa  = state.VIPModeActiveActive
		rel = state.WithoutQuorumRelease
		tb  = state.WithoutQuorumTiebreaker
	)
	// leader is a fit active-passive leader with quorum, lease and barrier.
	leader := OwnershipInput{Self: "n1", Mode: ap, WithoutQuorum: rel, Voters: 3, Quorum: true, Leader: "n1", LeaseOK: true, BarrierDone: true, Fit: true}
	// alone is a fit active-passive node of two voters that lost quorum.
	alone := OwnershipInput{Self: "n1", Mode: ap, WithoutQuorum: tb, Voters: 2, Leader: "", Fit: true, TiebreakerAnswers: true}
	with := func(in OwnershipInput, f func(*OwnershipInput)) OwnershipInput { f(&in); return in }
	for _, tc := range []struct {
		name     string
		in       OwnershipInput
		hold     bool
		degraded bool
	}{
		{"fit leader with quorum", leader, true, false},
		{"follower", with(leader, func(i *OwnershipInput) { i.Leader = "n2"; i.LeaseOK = false }), false, false},
		{"follower holding (quorum back: the leader owns)", with(leader, func(i *OwnershipInput) { i.Leader = "n2"; i.LeaseOK = false; i.Holding = true }), false, false},
		{"leader whose lease lapsed", with(leader, func(i *OwnershipInput) { i.LeaseOK = false; i.Holding = true }), false, false},
		{"leader before its barrier", with(leader, func(i *OwnershipInput) { i.BarrierDone = false }), false, false},
		{"unfit leader", with(leader, func(i *OwnershipInput) { i.Fit = false; i.Holding = true }), false, false},
		{"quorum but no leader known", with(leader, func(i *OwnershipInput) { i.Leader = "" }), false, false},
		{"forced claim ignored with quorum", with(leader, func(i *OwnershipInput) { i.Leader = "n2"; i.ForcedClaim = true }), false, false},
		{"nameless node", with(leader, func(i *OwnershipInput) { i.Self, i.Leader = "", "" }), false, false},

		{"release: no quorum", with(leader, func(i *OwnershipInput) { i.Quorum = false; i.Holding = true }), false, true},
		{"release: forced claim", with(leader, func(i *OwnershipInput) { i.Quorum, i.Leader, i.ForcedClaim = false, "", true }), true, true},
		{"release: forced claim on an unfit node", with(leader, func(i *OwnershipInput) { i.Quorum, i.ForcedClaim, i.Fit = false, true, false }), false, true},
		{"release: tiebreaker facts do not matter", with(leader, func(i *OwnershipInput) {
			i.Quorum, i.Holding, i.HolderDead, i.TiebreakerAnswers = false, true, false, true
		}), false, true},

		{"tiebreaker: holder keeps through step-down", with(alone, func(i *OwnershipInput) { i.Holding = true }), true, true},
		{"tiebreaker: holder, tiebreaker silent", with(alone, func(i *OwnershipInput) { i.Holding, i.TiebreakerAnswers = true, false }), false, true},
		{"tiebreaker: holder declared dead itself", with(alone, func(i *OwnershipInput) { i.Holding, i.HolderDead = true, true }), false, true},
		{"tiebreaker: holder unfit", with(alone, func(i *OwnershipInput) { i.Holding, i.Fit = true, false }), false, true},
		{"tiebreaker: claim, holder dead", with(alone, func(i *OwnershipInput) { i.HolderDead = true }), true, true},
		{"tiebreaker: no claim, holder alive", alone, false, true},
		{"tiebreaker: no claim, tiebreaker silent", with(alone, func(i *OwnershipInput) { i.HolderDead, i.TiebreakerAnswers = true, false }), false, true},
		{"tiebreaker: no claim when unfit", with(alone, func(i *OwnershipInput) { i.HolderDead, i.Fit = true, false }), false, true},
		{"tiebreaker: forced claim does not override", with(alone, func(i *OwnershipInput) { i.ForcedClaim = true }), false, true},
		{"unknown rule without quorum", with(alone, func(i *OwnershipInput) { i.WithoutQuorum, i.Holding = "auto", true }), false, true},

		{"active-active fit, quorum", with(leader, func(i *OwnershipInput) { i.Mode, i.Leader = aa, "n2" }), true, false},
		{"active-active fit, no quorum", with(alone, func(i *OwnershipInput) { i.Mode, i.TiebreakerAnswers = aa, false }), true, true},
		{"active-active unfit leader", with(leader, func(i *OwnershipInput) { i.Mode, i.Fit = aa, false }), false, false},
		{"mode none", with(leader, func(i *OwnershipInput) { i.Mode = state.VIPModeNone; i.Holding = true }), false, false},
		{"unknown mode", with(leader, func(i *OwnershipInput) { i.Mode = "" }), false, false},
	} {
		d := DecideOwnership(tc.in)
		if d.Hold != tc.hold || d.Degraded != tc.degraded || d.Reason == "" {
			t.Errorf("%s: got %+v, want hold %v degraded %v", tc.name, d, tc.hold, tc.degraded)
		}
	}
}

// The VRRP-style limit of the tiebreaker rule, recorded: when the two
// voters' views disagree (each declared the other dead, and both reach the
// tiebreaker) both hold. Only quorum (or an agreed view) rules it out.
func TestDecideOwnershipTiebreakerSplitViews(t *testing.T) {
	a := OwnershipInput{Self: "a", Mode: state.VIPModeActivePassive, WithoutQuorum: state.WithoutQuorumTiebreaker, Voters: 2, Fit: true, Holding: true, TiebreakerAnswers: true}
	b := a
	b.Self, b.Holding, b.HolderDead = "b", false, true
	if !DecideOwnership(a).Hold || !DecideOwnership(b).Hold {
		t.Error("expected the documented split-view double hold")
	}
}

// The per-node inputs the simulations enumerate, one bit each.
const (
	bitLease = 1 << iota
	bitBarrier
	bitFit
	bitHolding
	bitHolderDead
	bitTiebreaker
	bitForced
	nodeBits = iota
)

func nodeInput(self string, bits int) OwnershipInput {
	return OwnershipInput{
		Self:              self,
		LeaseOK:           bits&bitLease != 0,
		BarrierDone:       bits&bitBarrier != 0,
		Fit:               bits&bitFit != 0,
		Holding:           bits&bitHolding != 0,
		HolderDead:        bits&bitHolderDead != 0,
		TiebreakerAnswers: bits&bitTiebreaker != 0,
		ForcedClaim:       bits&bitForced != 0,
	}
}

// simulate decides for every node given its own bits and the shared view,
// and returns the set of holders (bit i: names[i] holds).
func simulate(names []string, bits []int, shared OwnershipInput) nodeSet {
	var holders nodeSet
	for i, name := range names {
		in := nodeInput(name, bits[i])
		in.Mode, in.WithoutQuorum, in.Voters = shared.Mode, shared.WithoutQuorum, len(names)
		in.Quorum, in.Leader = shared.Quorum, shared.Leader
		if DecideOwnership(in).Hold {
			holders |= 1 << i
		}
	}
	return holders
}

// nodeSet is a set of simulated nodes by index.
type nodeSet uint

func (s nodeSet) count() int {
	n := 0
	for ; s != 0; s &= s - 1 {
		n++
	}
	return n
}

func (s nodeSet) names(names []string) []string {
	var out []string
	for i, n := range names {
		if s&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// forEachCombination calls f with every assignment of per-node bits to n
// nodes.
func forEachCombination(n int, f func(bits []int)) {
	bits := make([]int, n)
	for combo := range 1 << (nodeBits * n) {
		for i := range bits {
			bits[i] = combo >> (nodeBits * i) & (1<<nodeBits - 1)
		}
		f(bits)
	}
}

// TestOwnershipSimulationThreeVoters runs all three nodes of an
// active-passive cluster over every combination of their inputs, under
// every shared view (leader, quorum) and both no-quorum rules: with quorum
// at most one node holds, and exactly one (the leader) when the leader is
// fit with lease and barrier; without quorum under release, exactly the fit
// nodes an operator forced hold.
func TestOwnershipSimulationThreeVoters(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	for _, rule := range []string{state.WithoutQuorumRelease, state.WithoutQuorumTiebreaker} {
		for _, leader := range append([]string{""}, names...) {
			quorumViews := []bool{true}
			if rule == state.WithoutQuorumRelease {
				// The tiebreaker rule without quorum is a two-voter rule; see
				// TestOwnershipSimulationTwoVotersTiebreaker.
				quorumViews = append(quorumViews, false)
			}
			for _, quorum := range quorumViews {
				shared := OwnershipInput{Mode: state.VIPModeActivePassive, WithoutQuorum: rule, Quorum: quorum, Leader: leader}
				failures := 0
				forEachCombination(len(names), func(bits []int) {
					holders := simulate(names, bits, shared)
					if quorum && holders.count() > 1 {
						t.Fatalf("leader %q bits %s: two holders with quorum: %v", leader, fmtBits(bits), holders.names(names))
					}
					var want nodeSet
					if quorum {
						if i := slices.Index(names, leader); i >= 0 && bits[i]&(bitLease|bitBarrier|bitFit) == bitLease|bitBarrier|bitFit {
							want = 1 << i
						}
					} else {
						for i := range names {
							if bits[i]&(bitForced|bitFit) == bitForced|bitFit {
								want |= 1 << i
							}
						}
					}
					if holders != want && failures < 10 {
						failures++
						t.Errorf("rule %s quorum %v leader %q bits %s: holders %v, want %v", rule, quorum, leader, fmtBits(bits), holders.names(names), want.names(names))
					}
				})
			}
		}
	}
}

// TestOwnershipSimulationTwoVotersTiebreaker runs both nodes of a two-voter
// cluster without quorum under the tiebreaker rule, over every combination
// of their inputs, where their views agree on who holds the VIP (at most one
// node, or none) and on whether gossip declared that holder dead: at most
// one node holds. Each node's tiebreaker probe is its own and varies freely.
func TestOwnershipSimulationTwoVotersTiebreaker(t *testing.T) {
	names := []string{"a", "b"}
	for _, leader := range []string{"", "a", "b"} {
		shared := OwnershipInput{Mode: state.VIPModeActivePassive, WithoutQuorum: state.WithoutQuorumTiebreaker, Leader: leader}
		checked := 0
		forEachCombination(len(names), func(bits []int) {
			holder := -1
			for i := range bits {
				if bits[i]&bitHolding != 0 {
					if holder >= 0 {
						return // two nodes think they hold: not an agreed view
					}
					holder = i
				}
			}
			dead := bits[0]&bitHolderDead != 0
			if dead != (bits[1]&bitHolderDead != 0) || dead && holder < 0 {
				return // they disagree, or a holder no one holds is dead
			}
			checked++
			holders := simulate(names, bits, shared)
			if holders.count() > 1 {
				t.Fatalf("leader %q bits %s: two holders %v", leader, fmtBits(bits), holders.names(names))
			}
			// Liveness: the VIP stays with, or moves from, the holder when
			// the rule allows it.
			var want nodeSet
			switch {
			case holder < 0:
			case !dead:
				if bits[holder]&(bitFit|bitTiebreaker) == bitFit|bitTiebreaker {
					want = 1 << holder
				}
			default:
				other := 1 - holder
				if bits[other]&(bitFit|bitTiebreaker) == bitFit|bitTiebreaker {
					want = 1 << other
				}
			}
			if holders != want {
				t.Fatalf("leader %q bits %s: holders %v, want %v", leader, fmtBits(bits), holders.names(names), want.names(names))
			}
		})
		if checked == 0 {
			t.Fatal("no agreed view simulated")
		}
	}
}

// TestOwnershipSimulationOtherModes: active-active announces exactly on the
// fit nodes whatever the cluster's state; mode none never holds.
func TestOwnershipSimulationOtherModes(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	for _, quorum := range []bool{true, false} {
		for _, leader := range append([]string{""}, names...) {
			forEachCombination(len(names), func(bits []int) {
				shared := OwnershipInput{Mode: state.VIPModeActiveActive, WithoutQuorum: state.WithoutQuorumRelease, Quorum: quorum, Leader: leader}
				var want nodeSet
				for i := range names {
					if bits[i]&bitFit != 0 {
						want |= 1 << i
					}
				}
				if got := simulate(names, bits, shared); got != want {
					t.Fatalf("active-active quorum %v leader %q bits %s: %v, want %v", quorum, leader, fmtBits(bits), got.names(names), want.names(names))
				}
				shared.Mode = state.VIPModeNone
				if got := simulate(names, bits, shared); got != 0 {
					t.Fatalf("mode none quorum %v leader %q bits %s: holders %v", quorum, leader, fmtBits(bits), got.names(names))
				}
			})
		}
	}
}

func fmtBits(bits []int) string {
	names := []string{"lease", "barrier", "fit", "holding", "holderdead", "tiebreaker", "forced"}
	out := ""
	for i, b := range bits {
		set := []string{}
		for j, n := range names {
			if b&(1<<j) != 0 {
				set = append(set, n)
			}
		}
		out += fmt.Sprintf("[node%d %v]", i, set)
	}
	return out
}

func TestPreferredOwner(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	delay := 30 * time.Second
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	long := ago(time.Hour)
	for _, tc := range []struct {
		name    string
		nodes   []Candidate
		current string
		delay   time.Duration
		want    string
	}{
		{"no nodes", nil, "", delay, ""},
		{"none fit", []Candidate{{Name: "a", Priority: 100}, {Name: "b", Priority: 200}}, "a", delay, ""},
		{"highest priority, no owner yet", []Candidate{{"a", 100, true, long}, {"b", 200, true, long}, {"c", 150, true, long}}, "", delay, "b"},
		{"unfit highest is skipped", []Candidate{{"a", 100, true, long}, {"b", 200, false, long}, {"c", 150, true, long}}, "", delay, "c"},
		{"ties by name", []Candidate{{"c", 100, true, long}, {"a", 100, true, long}, {"b", 100, true, long}}, "", delay, "a"},
		{"equal priority does not preempt", []Candidate{{"a", 100, true, long}, {"b", 100, true, long}}, "b", delay, "b"},
		{"current unfit: fail over at once to the best", []Candidate{{"a", 100, false, long}, {"b", 50, true, ago(time.Second)}, {"c", 80, true, ago(time.Second)}}, "a", delay, "c"},
		{"current gone: fail over", []Candidate{{"b", 50, true, long}}, "a", delay, "b"},
		{"lower priority current kept before the delay", []Candidate{{"a", 200, true, ago(delay - time.Nanosecond)}, {"b", 100, true, long}}, "b", delay, "b"},
		{"preempt at exactly the delay", []Candidate{{"a", 200, true, ago(delay)}, {"b", 100, true, long}}, "b", delay, "a"},
		{"preempt after the delay", []Candidate{{"a", 200, true, ago(delay + time.Second)}, {"b", 100, true, long}}, "b", delay, "a"},
		{"delay 0 never preempts", []Candidate{{"a", 200, true, long}, {"b", 100, true, long}}, "b", 0, "b"},
		{"delay 0 still fails over", []Candidate{{"a", 200, true, long}, {"b", 100, false, long}}, "b", 0, "a"},
		{"unknown healthy-since does not preempt", []Candidate{{"a", 200, true, time.Time{}}, {"b", 100, true, long}}, "b", delay, "b"},
		{"healthy-since in the future does not preempt", []Candidate{{"a", 200, true, now.Add(time.Second)}, {"b", 100, true, long}}, "b", delay, "b"},
		// No double interruption: the best node is not yet stable, so the
		// owner stays put rather than moving to a middle node first.
		{"wait for the best, not a middle node", []Candidate{{"a", 200, true, ago(time.Second)}, {"m", 150, true, long}, {"b", 100, true, long}}, "b", delay, "b"},
		{"current already the best", []Candidate{{"a", 200, true, ago(time.Second)}, {"b", 100, true, long}}, "a", delay, "a"},
		{"nameless candidate ignored", []Candidate{{"", 255, true, long}, {"b", 100, true, long}}, "", delay, "b"},
	} {
		if got := PreferredOwner(tc.nodes, tc.current, now, tc.delay); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

// Whatever the order of the candidates, the answer is the same.
func TestPreferredOwnerOrderIndependent(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	nodes := []Candidate{{"a", 100, true, now}, {"b", 100, true, now}, {"c", 90, true, now}, {"d", 100, false, now}}
	want := PreferredOwner(nodes, "", now, time.Minute)
	for range 20 {
		for i := range nodes {
			j := (i*7 + 3) % len(nodes)
			nodes[i], nodes[j] = nodes[j], nodes[i]
		}
		if got := PreferredOwner(nodes, "", now, time.Minute); got != want || got != "a" {
			t.Fatalf("order %v: %q, want a", nodes, got)
		}
	}
}
