package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Tests of the current weights (Load.Weight): the dynamic algorithms follow
// them, the static ones keep their configured layout and only skip weight 0.

var (
	balRR        = state.Balance{Algorithm: state.BalanceRoundRobin}
	balStaticRR  = state.Balance{Algorithm: state.BalanceStaticRR}
	balLeastConn = state.Balance{Algorithm: state.BalanceLeastConn}
)

func isDynamic(a algo) bool {
	switch a.bal.Algorithm {
	case state.BalanceRoundRobin, state.BalanceLeastConn, state.BalanceFirst, state.BalanceRandom:
		return true
	}
	return false
}

// TestRoundRobinWeightChange: a weight change mid-stream takes effect on the
// next picks, smoothly.
func TestRoundRobinWeightChange(t *testing.T) {
	srv := servers(2)
	b := mustNew(t, balRR, "", srv)
	load := newFakeLoad(srv)
	counts := count(b, load, 1000, nil, nil)
	if want := []int{500, 500}; !slices.Equal(counts, want) {
		t.Fatalf("1:1: counts %v, want %v", counts, want)
	}
	load.weight[1] = 3
	var seq []int
	counts = count(b, load, 4000, nil, func(i int) { seq = append(seq, i) })
	within(t, "1:3 a", counts[0], 1000, 0.02)
	within(t, "1:3 b", counts[1], 3000, 0.02)
	if r := longestRun(seq); r > 3 {
		t.Errorf("1:3: a server was picked %d times in a row, want at most 3", r)
	}
	// And back.
	load.weight[1] = 1
	counts = count(b, load, 2000, nil, nil)
	within(t, "back to 1:1 a", counts[0], 1000, 0.02)
	within(t, "back to 1:1 b", counts[1], 1000, 0.02)
}

// TestRoundRobinRamp: a server ramping from weight 1 to 10 (slowstart) gets a
// share proportional to its current weight at every step.
func TestRoundRobinRamp(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 10}, {Name: "b", Weight: 10}}
	b := mustNew(t, balRR, "", srv)
	load := newFakeLoad(srv)
	prev := 0
	for w := 1; w <= 10; w++ {
		load.weight[1] = w
		const rounds = 200
		counts := count(b, load, (10+w)*rounds, nil, nil)
		within(t, fmt.Sprintf("weight %d: b", w), counts[1], w*rounds, 0.02)
		within(t, fmt.Sprintf("weight %d: a", w), counts[0], 10*rounds, 0.02)
		if counts[1] <= prev {
			t.Errorf("weight %d: b got %d picks, no more than at the previous step (%d)", w, counts[1], prev)
		}
		prev = counts[1]
	}
}

// TestRoundRobinBounded drives roundrobin through random weight changes,
// servers going down and up, and skips: the internal values stay small (no
// overflow, no reset), every candidate is picked within a bounded number of
// picks (no starvation), and once the weights settle the proportions are
// right again.
func TestRoundRobinBounded(t *testing.T) {
	srv := servers(6)
	b := mustNew(t, balRR, "", srv).(*smoothRR)
	load := newFakeLoad(srv)
	rng := rand.New(rand.NewPCG(1, 2))
	var maxAbs int64
	for n := range 200000 {
		if n%7 == 0 {
			i := rng.IntN(len(srv))
			switch rng.IntN(4) {
			case 0:
				load.down[i] = !load.down[i]
			case 1:
				load.weight[i] = 0
			default:
				load.weight[i] = 1 + rng.IntN(MaxWeight)
			}
		}
		skip := -1
		if n%5 == 0 {
			skip = rng.IntN(len(srv))
		}
		b.Pick(nil, load, skip)
		var sum int64
		for _, c := range b.cur {
			maxAbs = max(maxAbs, c, -c)
			sum += c
		}
		if sum != 0 {
			t.Fatalf("pick %d: values sum to %d, want 0", n, sum)
		}
	}
	// A few times the largest possible total (6*256), nowhere near rrLimit.
	if bound := int64(8 * len(srv) * MaxWeight); maxAbs > bound {
		t.Errorf("a value reached %d, want at most %d", maxAbs, bound)
	}
	t.Logf("largest |value| %d (total weight at most %d)", maxAbs, len(srv)*MaxWeight)

	// Settle on 1:2:...:6 (total 21). Values carried over from the old
	// weights are spent at the new scale, a one-off transient of at most
	// about maxAbs/21 picks per server; meanwhile every server is picked
	// at least every other round (no starvation).
	for i := range srv {
		load.down[i], load.weight[i] = false, i+1
	}
	last := make([]int, len(srv))
	for i := range last {
		last[i] = -1
	}
	counts := make([]int, len(srv))
	for n := range 21000 {
		i := b.Pick(nil, load, -1)
		counts[i]++
		if last[i] >= 0 && n-last[i] > 2*21 {
			t.Fatalf("server %d waited %d picks", i, n-last[i])
		}
		last[i] = n
	}
	for i := range srv {
		if d, slack := abs(counts[i]-1000*(i+1)), int(maxAbs/21)+2; d > slack {
			t.Errorf("settling: server %d got %d picks, want %d ± %d", i, counts[i], 1000*(i+1), slack)
		}
	}
	// Transient over: exact to a pick per round.
	clear(counts)
	for range 2100 {
		counts[b.Pick(nil, load, -1)]++
	}
	for i := range srv {
		if d := abs(counts[i] - 100*(i+1)); d > 1 {
			t.Errorf("settled: server %d got %d picks, want %d ± 1", i, counts[i], 100*(i+1))
		}
	}
}

func abs(x int) int { return max(x, -x) }

// TestRoundRobinLimit: should a value ever leave ±rrLimit, the values are
// reset instead of overflowing.
func TestRoundRobinLimit(t *testing.T) {
	srv := servers(3)
	b := mustNew(t, balRR, "", srv).(*smoothRR)
	load := newFakeLoad(srv)
	b.cur[0], b.cur[1], b.cur[2] = rrLimit, -rrLimit/2, -rrLimit/2
	if got := b.Pick(nil, load, -1); got != 0 {
		t.Errorf("picked %d, want 0", got)
	}
	if !slices.Equal(b.cur, []int64{0, 0, 0}) {
		t.Errorf("values %v after the guard, want reset", b.cur)
	}
	counts := count(b, load, 300, nil, nil)
	if want := []int{100, 100, 100}; !slices.Equal(counts, want) {
		t.Errorf("after the reset: counts %v, want %v", counts, want)
	}
}

// TestWeightZero checks, for every algorithm, that a server at current
// weight 0 gets no traffic but does not activate the backups while another
// primary has a weight; that the backups take over when every primary is at
// weight 0 (as in HAProxy, where a weight-0 server is not usable for load
// balancing); and that Pick returns -1 when the backups are at weight 0 too.
func TestWeightZero(t *testing.T) {
	srv := append(servers(3), Server{Name: "b0", Weight: 1, Backup: true}, Server{Name: "b1", Weight: 1, Backup: true})
	for _, a := range algos {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			load.weight[0] = 0
			counts := count(b, load, 1000, request, nil)
			if counts[0] != 0 || counts[3]+counts[4] != 0 || counts[1]+counts[2] != 1000 {
				t.Errorf("s0 at weight 0: counts %v", counts)
			}
			if a.bal.Algorithm != state.BalanceFirst && (counts[1] == 0 || counts[2] == 0) {
				t.Errorf("s0 at weight 0: s1 and s2 not balanced: %v", counts)
			}
			// s1 is the only primary with a weight: skipping it returns
			// it, the backups stay idle.
			load.weight[2] = 0
			if got := b.Pick(request(3), load, 1); got != 1 {
				t.Errorf("skip the only weighted primary: picked %d, want 1", got)
			}
			// Every primary UP but at weight 0: the backups serve.
			load.weight[1] = 0
			counts = count(b, load, 1000, request, nil)
			if counts[0]+counts[1]+counts[2] != 0 || counts[3]+counts[4] != 1000 {
				t.Errorf("primaries at weight 0: counts %v", counts)
			}
			// A primary gets a weight back: the backups stop.
			load.weight[2] = 1
			counts = count(b, load, 100, request, nil)
			if counts[2] != 100 {
				t.Errorf("s2 back at weight 1: counts %v", counts)
			}
			load.weight[2] = 0
			load.weight[3], load.weight[4] = 0, 0
			for skip := -1; skip < len(srv); skip++ {
				if got := b.Pick(request(1), load, skip); got != -1 {
					t.Errorf("every weight 0, skip %d: picked %d, want -1", skip, got)
				}
			}
		})
	}
}

// TestWeightClamped: a current weight above MaxWeight counts as MaxWeight, a
// negative one as 0.
func TestWeightClamped(t *testing.T) {
	srv := servers(3)
	b := mustNew(t, balRR, "", srv)
	load := newFakeLoad(srv)
	load.weight[0], load.weight[1], load.weight[2] = 1000, MaxWeight, -5
	counts := count(b, load, 2000, nil, nil)
	if want := []int{1000, 1000, 0}; !slices.Equal(counts, want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
}

// TestConfiguredZeroWeight: a server configured with weight 0 takes part in
// the dynamic algorithms once its current weight is raised (HAProxy's `set
// weight` on a dynamic algorithm), never in the static ones.
func TestConfiguredZeroWeight(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 0}}
	for _, a := range algos {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			if counts := count(b, load, 100, request, nil); counts[1] != 0 {
				t.Errorf("at weight 0: b picked %d times", counts[1])
			}
			load.weight[1] = 1
			load.down[0] = true
			got := b.Pick(request(1), load, -1)
			if want := map[bool]int{true: 1, false: -1}[isDynamic(a)]; got != want {
				t.Errorf("b raised to weight 1, a down: picked %d, want %d", got, want)
			}
		})
	}
}

// TestLeastConnCurrentWeight: leastconn compares Active over the current
// weight, not the configured one.
func TestLeastConnCurrentWeight(t *testing.T) {
	srv := servers(2)
	b := mustNew(t, balLeastConn, "", srv)
	load := newFakeLoad(srv)
	load.weight[1] = 4
	// 4 active at weight 4 is less loaded than 2 at weight 1.
	load.active = []int64{2, 4}
	if got := b.Pick(nil, load, -1); got != 1 {
		t.Errorf("picked %d, want 1", got)
	}
	load.active = []int64{0, 0}
	count(b, load, 500, nil, func(i int) { load.active[i]++ })
	within(t, "fill a", int(load.active[0]), 100, 0.02)
	within(t, "fill b", int(load.active[1]), 400, 0.02)
	// Weight 0: never picked, however idle.
	load.weight[1] = 0
	load.active = []int64{1000, 0}
	if counts := count(b, load, 100, nil, nil); counts[1] != 0 {
		t.Errorf("weight 0: picked %d times", counts[1])
	}
}

// TestRandomCurrentWeight: random draws by the current weights.
func TestRandomCurrentWeight(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 5}, {Name: "b", Weight: 5}, {Name: "c", Weight: 5}}
	for _, draws := range []int{1, 2} {
		b := mustNew(t, state.Balance{Algorithm: state.BalanceRandom, Draws: draws}, "", srv)
		load := newFakeLoad(srv)
		load.weight[0], load.weight[1], load.weight[2] = 1, 3, 0
		counts := count(b, load, 100000, nil, nil)
		within(t, fmt.Sprintf("random(%d) a", draws), counts[0], 25000, 0.03)
		within(t, fmt.Sprintf("random(%d) b", draws), counts[1], 75000, 0.03)
		if counts[2] != 0 {
			t.Errorf("random(%d): weight-0 server picked %d times", draws, counts[2])
		}
	}
}

// TestStaticRRStatic: static-rr keeps its configured sequence whatever the
// current weights, and a weight-0 server is skipped exactly like a down one.
func TestStaticRRStatic(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 2}, {Name: "b", Weight: 4}, {Name: "c", Weight: 6}}
	picks := func(mod func(*fakeLoad)) (seq, counts []int) {
		b := mustNew(t, balStaticRR, "", srv)
		load := newFakeLoad(srv)
		mod(load)
		counts = count(b, load, 6000, nil, func(i int) { seq = append(seq, i) })
		return seq, counts
	}
	base, counts := picks(func(*fakeLoad) {})
	if want := []int{1000, 2000, 3000}; !slices.Equal(counts, want) {
		t.Fatalf("configured weights: counts %v, want %v", counts, want)
	}
	for _, w := range [][]int{{6, 4, 2}, {1, 1, 1}, {256, 1, 9}} {
		seq, _ := picks(func(l *fakeLoad) { copy(l.weight, w) })
		if !slices.Equal(seq, base) {
			t.Errorf("current weights %v changed the sequence: %v, want %v", w, seq[:12], base[:12])
		}
	}
	down, _ := picks(func(l *fakeLoad) { l.down[2] = true })
	zero, counts := picks(func(l *fakeLoad) { l.weight[2] = 0 })
	if counts[2] != 0 || !slices.Equal(zero, down) {
		t.Errorf("c at weight 0: counts %v, sequence %v, want the c-down one %v", counts, zero[:12], down[:12])
	}
}

// TestHashStatic: map-based and consistent hashing keep their configured
// mapping whatever the current weights, and a server at weight 0 is handled
// exactly as an unusable one: the same keys move, to the same servers.
func TestHashStatic(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}, {Name: "c", Weight: 3}, {Name: "d", Weight: 1}}
	for _, a := range hashAlgos() {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			picks := func(mod func(*fakeLoad)) []int {
				load := newFakeLoad(srv)
				mod(load)
				out := make([]int, 5000)
				for n := range out {
					out[n] = b.Pick(request(n), load, -1)
				}
				return out
			}
			base := picks(func(*fakeLoad) {})
			for _, w := range [][]int{{3, 2, 1, 1}, {256, 1, 1, 1}, {1, 1, 1, 1}} {
				if got := picks(func(l *fakeLoad) { copy(l.weight, w) }); !slices.Equal(got, base) {
					t.Errorf("current weights %v moved keys", w)
				}
			}
			down := picks(func(l *fakeLoad) { l.down[2] = true })
			zero := picks(func(l *fakeLoad) { l.weight[2] = 0 })
			if slices.Contains(zero, 2) {
				t.Error("a key went to the weight-0 server")
			}
			if !slices.Equal(zero, down) {
				t.Error("weight 0 maps keys differently from down")
			}
		})
	}
}
