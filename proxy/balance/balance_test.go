package balance

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fulcrum-lb/fulcrum/state"
)

// fakeLoad is a Load for single-goroutine tests: every server up, idle, at
// its configured weight.
type fakeLoad struct {
	down   []bool
	weight []int // current weights
	active []int64
}

func newFakeLoad(srv []Server) *fakeLoad {
	n := len(srv)
	l := &fakeLoad{down: make([]bool, n), weight: make([]int, n), active: make([]int64, n)}
	for i, s := range srv {
		l.weight[i] = s.Weight
	}
	return l
}

func (l *fakeLoad) Usable(i int) bool  { return !l.down[i] }
func (l *fakeLoad) Weight(i int) int   { return l.weight[i] }
func (l *fakeLoad) Active(i int) int64 { return l.active[i] }

// atomicLoad is a Load for concurrent tests, like the proxy's.
type atomicLoad struct {
	down   []atomic.Bool
	weight []atomic.Int32
	active []atomic.Int64
}

func newAtomicLoad(srv []Server) *atomicLoad {
	n := len(srv)
	l := &atomicLoad{down: make([]atomic.Bool, n), weight: make([]atomic.Int32, n), active: make([]atomic.Int64, n)}
	for i, s := range srv {
		l.weight[i].Store(int32(s.Weight))
	}
	return l
}

func (l *atomicLoad) Usable(i int) bool  { return !l.down[i].Load() }
func (l *atomicLoad) Weight(i int) int   { return int(l.weight[i].Load()) }
func (l *atomicLoad) Active(i int) int64 { return l.active[i].Load() }

type algo struct {
	name string
	bal  state.Balance
	hash string
}

func (a algo) hashed() bool { return a.bal.Hashed() }

var algos = []algo{
	{"roundrobin", state.Balance{Algorithm: state.BalanceRoundRobin}, ""},
	{"static-rr", state.Balance{Algorithm: state.BalanceStaticRR}, ""},
	{"leastconn", state.Balance{Algorithm: state.BalanceLeastConn}, ""},
	{"first", state.Balance{Algorithm: state.BalanceFirst}, ""},
	{"random", state.Balance{Algorithm: state.BalanceRandom, Draws: 2}, ""},
	{"random1", state.Balance{Algorithm: state.BalanceRandom, Draws: 1}, ""},
	{"source/map-based", state.Balance{Algorithm: state.BalanceSource}, HashMapBased},
	{"source/consistent", state.Balance{Algorithm: state.BalanceSource}, HashConsistent},
	{"uri/map-based", state.Balance{Algorithm: state.BalanceURI}, HashMapBased},
	{"uri/consistent", state.Balance{Algorithm: state.BalanceURI}, HashConsistent},
	{"url_param/map-based", state.Balance{Algorithm: state.BalanceURLParam, Param: "id"}, HashMapBased},
	{"url_param/consistent", state.Balance{Algorithm: state.BalanceURLParam, Param: "id"}, HashConsistent},
	{"hdr/map-based", state.Balance{Algorithm: state.BalanceHdr, Param: "X-User"}, HashMapBased},
	{"hdr/consistent", state.Balance{Algorithm: state.BalanceHdr, Param: "X-User"}, HashConsistent},
}

func mustNew(t testing.TB, b state.Balance, hashType string, servers []Server) Balancer {
	t.Helper()
	bal, err := New(b, hashType, servers)
	if err != nil {
		t.Fatalf("New(%+v, %q): %v", b, hashType, err)
	}
	return bal
}

// servers returns n servers s0..s(n-1) of weight 1.
func servers(n int) []Server {
	s := make([]Server, n)
	for i := range s {
		s[i] = Server{Name: fmt.Sprintf("s%d", i), Weight: 1}
	}
	return s
}

// request returns a request whose every key (source, uri, url_param id,
// hdr X-User) derives from n, so that distinct n spread over the servers.
func request(n int) *Request {
	key := []byte(fmt.Sprintf("user-%d", n))
	return &Request{
		Source: netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}),
		Path:   []byte("/item/" + string(key)),
		Query:  []byte("a=1&id=" + string(key) + "&b=2"),
		Header: func(name string) []byte {
			if name == "X-User" {
				return key
			}
			return nil
		},
	}
}

func within(t *testing.T, what string, got, want int, tol float64) {
	t.Helper()
	if math.Abs(float64(got-want)) > tol*float64(want) {
		t.Errorf("%s: got %d, want %d ± %.0f%%", what, got, want, tol*100)
	}
}

func count(b Balancer, load Load, n int, req func(int) *Request, after func(int)) []int {
	counts := make([]int, len(load.(*fakeLoad).down))
	for k := range n {
		var r *Request
		if req != nil {
			r = req(k)
		}
		i := b.Pick(r, load, -1)
		if i >= 0 {
			counts[i]++
		}
		if after != nil {
			after(i)
		}
	}
	return counts
}

func TestNewErrors(t *testing.T) {
	rr := state.Balance{Algorithm: state.BalanceRoundRobin}
	uri := state.Balance{Algorithm: state.BalanceURI}
	for _, tc := range []struct {
		name    string
		b       state.Balance
		hash    string
		servers []Server
		want    string
	}{
		{"unknown algorithm", state.Balance{Algorithm: "fastest"}, "", servers(1), "unknown algorithm"},
		{"no algorithm", state.Balance{}, "", servers(1), "no algorithm"},
		{"weight too big", rr, "", []Server{{Name: "a", Weight: 257}}, "weight 257"},
		{"negative weight", rr, "", []Server{{Name: "a", Weight: -1}}, "weight -1"},
		{"negative maxconn", rr, "", []Server{{Name: "a", Weight: 1, MaxConn: -1}}, "maxconn"},
		{"no hash type", uri, "", servers(1), "unknown hash type"},
		{"bad hash type", uri, "ring", servers(1), "unknown hash type"},
		{"url_param without name", state.Balance{Algorithm: state.BalanceURLParam}, HashMapBased, servers(1), "needs a name"},
		{"random without draws", state.Balance{Algorithm: state.BalanceRandom}, "", servers(1), "at least 1 draw"},
		{"duplicate names", uri, HashConsistent, []Server{{Name: "a", Weight: 1}, {Name: "a", Weight: 1}}, "unique"},
		{"unnamed", uri, HashConsistent, []Server{{Weight: 1}}, "names"},
	} {
		_, err := New(tc.b, tc.hash, tc.servers)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// hash_type is ignored by the algorithms that do not hash.
	mustNew(t, rr, "whatever", servers(1))
}

func TestRoundRobin(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}, {Name: "c", Weight: 3}}
	b := mustNew(t, state.Balance{Algorithm: state.BalanceRoundRobin}, "", srv)
	load := newFakeLoad(srv)
	var seq []int
	counts := count(b, load, 6000, nil, func(i int) { seq = append(seq, i) })
	for i, want := range []int{1000, 2000, 3000} {
		within(t, fmt.Sprintf("server %d", i), counts[i], want, 0.02)
	}
	// Interleaved, not AAABBB: the smooth order of 1:2:3 is c b a c b c.
	if want := []int{2, 1, 0, 2, 1, 2}; !slices.Equal(seq[:6], want) {
		t.Errorf("first cycle %v, want %v", seq[:6], want)
	}
	if r := longestRun(seq); r > 2 {
		t.Errorf("a server was picked %d times in a row, want at most 2", r)
	}

	// c down: a and b share 1:2.
	load.down[2] = true
	counts = count(b, load, 3000, nil, nil)
	if counts[2] != 0 {
		t.Errorf("down server picked %d times", counts[2])
	}
	within(t, "a with c down", counts[0], 1000, 0.02)
	within(t, "b with c down", counts[1], 2000, 0.02)
}

func longestRun(seq []int) int {
	best, run := 0, 0
	for k := range seq {
		if k > 0 && seq[k] == seq[k-1] {
			run++
		} else {
			run = 1
		}
		best = max(best, run)
	}
	return best
}

func TestStaticRR(t *testing.T) {
	// Weights 2:4:6 reduce to 1:2:3: a six-entry cycle.
	srv := []Server{{Name: "a", Weight: 2}, {Name: "b", Weight: 4}, {Name: "c", Weight: 6}}
	b := mustNew(t, state.Balance{Algorithm: state.BalanceStaticRR}, "", srv)
	load := newFakeLoad(srv)
	var seq []int
	counts := count(b, load, 6000, nil, func(i int) { seq = append(seq, i) })
	if want := []int{1000, 2000, 3000}; !slices.Equal(counts, want) {
		t.Errorf("counts %v, want exactly %v", counts, want)
	}
	for k := 6; k < len(seq); k++ {
		if seq[k] != seq[k-6] {
			t.Fatalf("sequence not periodic at %d: %v", k, seq[:12])
		}
	}
	if r := longestRun(seq); r > 2 {
		t.Errorf("a server was picked %d times in a row, want at most 2", r)
	}

	// a down: its entries pass to the next server in the sequence.
	load.down[0] = true
	counts = count(b, load, 6000, nil, nil)
	if counts[0] != 0 || counts[1]+counts[2] != 6000 {
		t.Errorf("with a down: counts %v", counts)
	}
}

func TestLeastConn(t *testing.T) {
	b := mustNew(t, state.Balance{Algorithm: state.BalanceLeastConn}, "", servers(3))
	load := newFakeLoad(servers(3))
	load.active = []int64{5, 2, 7}
	for range 10 {
		if got := b.Pick(nil, load, -1); got != 1 {
			t.Fatalf("picked %d, want the least loaded 1", got)
		}
	}
	// Skip the least loaded: the next least loaded.
	if got := b.Pick(nil, load, 1); got != 0 {
		t.Errorf("with skip 1: picked %d, want 0", got)
	}
	load.down[1] = true
	if got := b.Pick(nil, load, -1); got != 0 {
		t.Errorf("with 1 down: picked %d, want 0", got)
	}

	// Ties share the load round-robin.
	load = newFakeLoad(servers(3))
	counts := count(b, load, 300, nil, nil)
	if want := []int{100, 100, 100}; !slices.Equal(counts, want) {
		t.Errorf("ties: counts %v, want %v", counts, want)
	}

	// Weighted: 4 active on weight 4 is less loaded than 2 on weight 1.
	weighted := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 4}}
	w := mustNew(t, state.Balance{Algorithm: state.BalanceLeastConn}, "", weighted)
	load = newFakeLoad(weighted)
	load.active = []int64{2, 4}
	if got := w.Pick(nil, load, -1); got != 1 {
		t.Errorf("weighted: picked %d, want 1", got)
	}
	// Filling from empty keeps active counts proportional to the weights.
	load.active = []int64{0, 0}
	count(w, load, 500, nil, func(i int) { load.active[i]++ })
	within(t, "weighted fill a", int(load.active[0]), 100, 0.02)
	within(t, "weighted fill b", int(load.active[1]), 400, 0.02)
}

func TestFirst(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1, MaxConn: 2}, {Name: "b", Weight: 1, MaxConn: 3}, {Name: "c", Weight: 1, MaxConn: 1}}
	b := mustNew(t, state.Balance{Algorithm: state.BalanceFirst}, "", srv)
	load := newFakeLoad(srv)
	var seq []int
	count(b, load, 6, nil, func(i int) { seq = append(seq, i); load.active[i]++ })
	if want := []int{0, 0, 1, 1, 1, 2}; !slices.Equal(seq, want) {
		t.Errorf("fill order %v, want %v", seq, want)
	}
	// All full: the least loaded (c, with 1).
	if got := b.Pick(nil, load, -1); got != 2 {
		t.Errorf("all full: picked %d, want 2", got)
	}
	// A slot frees on a: back to a.
	load.active[0]--
	if got := b.Pick(nil, load, -1); got != 0 {
		t.Errorf("after a frees a slot: picked %d, want 0", got)
	}
	// Skip a: the next one with room... b is full, c is full: least loaded
	// other than a.
	if got := b.Pick(nil, load, 0); got != 2 {
		t.Errorf("skip a: picked %d, want 2", got)
	}
	// Unlimited: always the first usable.
	u := mustNew(t, state.Balance{Algorithm: state.BalanceFirst}, "", servers(3))
	load = newFakeLoad(servers(3))
	load.active = []int64{1000, 0, 0}
	if got := u.Pick(nil, load, -1); got != 0 {
		t.Errorf("unlimited: picked %d, want 0", got)
	}
	load.down[0] = true
	if got := u.Pick(nil, load, -1); got != 1 {
		t.Errorf("unlimited, a down: picked %d, want 1", got)
	}
}

func TestRandom(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}
	for _, draws := range []int{1, 2} {
		b := mustNew(t, state.Balance{Algorithm: state.BalanceRandom, Draws: draws}, "", srv)
		// 100,000 picks put 3% at 5.5 standard deviations for a: no flakes.
		counts := count(b, newFakeLoad(srv), 100000, nil, nil)
		within(t, fmt.Sprintf("random(%d) a", draws), counts[0], 25000, 0.03)
		within(t, fmt.Sprintf("random(%d) b", draws), counts[1], 75000, 0.03)
	}
	// Power of two choices: a loaded server wins only when both draws hit
	// it (1/4 with equal weights).
	b := mustNew(t, state.Balance{Algorithm: state.BalanceRandom, Draws: 2}, "", servers(2))
	load := newFakeLoad(servers(2))
	load.active = []int64{10, 0}
	counts := count(b, load, 40000, nil, nil)
	within(t, "p2c loaded", counts[0], 10000, 0.05)
	within(t, "p2c idle", counts[1], 30000, 0.03)
	// Many draws almost always find the idle one.
	b = mustNew(t, state.Balance{Algorithm: state.BalanceRandom, Draws: 10}, "", servers(2))
	counts = count(b, load, 10000, nil, nil)
	if counts[0] > 50 {
		t.Errorf("random(10): loaded server picked %d times of 10000", counts[0])
	}
}

// TestBackup checks, for every algorithm, that backups serve only when no
// primary is usable (weight 0 counting as unusable), and that usable backups
// are then all used.
func TestBackup(t *testing.T) {
	srv := []Server{
		{Name: "p0", Weight: 1}, {Name: "p1", Weight: 1}, {Name: "p2", Weight: 0},
		{Name: "b0", Weight: 1, Backup: true}, {Name: "b1", Weight: 1, Backup: true},
	}
	for _, a := range algos {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			counts := count(b, load, 1000, request, nil)
			if counts[2]+counts[3]+counts[4] != 0 {
				t.Errorf("primaries up: counts %v", counts)
			}
			load.down[0] = true
			counts = count(b, load, 1000, request, nil)
			if counts[1] != 1000 {
				t.Errorf("one primary up: counts %v", counts)
			}
			load.down[1] = true
			counts = count(b, load, 1000, request, nil)
			if counts[0]+counts[1]+counts[2] != 0 || counts[3]+counts[4] != 1000 {
				t.Errorf("primaries down: counts %v", counts)
			}
			if a.bal.Algorithm != state.BalanceFirst && (counts[3] == 0 || counts[4] == 0) {
				t.Errorf("primaries down: backups not balanced: %v", counts)
			}
			load.down[3], load.down[4] = true, true
			if got := b.Pick(request(1), load, -1); got != -1 {
				t.Errorf("nothing usable: picked %d, want -1", got)
			}
			if got := b.Pick(request(1), load, 0); got != -1 {
				t.Errorf("nothing usable, skip 0: picked %d, want -1", got)
			}
		})
	}
}

// TestSkip checks, for every algorithm, that skip is avoided while another
// usable server exists, and returned when it is the only one.
func TestSkip(t *testing.T) {
	srv := append(servers(3), Server{Name: "backup", Weight: 1, Backup: true})
	for _, a := range algos {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			for n := range 300 {
				skip := n % 3
				if got := b.Pick(request(n), load, skip); got == skip || got < 0 || got > 2 {
					t.Fatalf("skip %d: picked %d", skip, got)
				}
			}
			// Only s1 usable: skipping it returns it again (the backup is
			// not used while a primary is usable, as in HAProxy).
			load.down[0], load.down[2] = true, true
			if got := b.Pick(request(7), load, 1); got != 1 {
				t.Errorf("only skip usable: picked %d, want 1", got)
			}
			// A skip outside the active group is irrelevant.
			if got := b.Pick(request(7), load, 3); got != 1 {
				t.Errorf("skip a backup: picked %d, want 1", got)
			}
		})
	}
}

// TestZeroWeight checks that weight-0 servers are never picked, even when they
// are the only primaries.
func TestZeroWeight(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 0}, {Name: "b", Weight: 0}}
	for _, a := range algos {
		b := mustNew(t, a.bal, a.hash, srv)
		if got := b.Pick(request(1), newFakeLoad(srv), -1); got != -1 {
			t.Errorf("%s: picked %d from weight-0 servers", a.name, got)
		}
		if got := b.Pick(request(1), newFakeLoad(srv), 0); got != -1 {
			t.Errorf("%s: picked %d from weight-0 servers with skip", a.name, got)
		}
	}
	// No servers at all.
	for _, a := range algos {
		b := mustNew(t, a.bal, a.hash, nil)
		if got := b.Pick(request(1), newFakeLoad(nil), -1); got != -1 {
			t.Errorf("%s: picked %d from no servers", a.name, got)
		}
	}
}

// TestConcurrentPick runs every algorithm from many goroutines while the
// load changes, for the race detector.
func TestConcurrentPick(t *testing.T) {
	srv := append(servers(5), Server{Name: "backup", Weight: 2, Backup: true, MaxConn: 3})
	srv[1].Weight, srv[2].MaxConn = 3, 4
	for _, a := range algos {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			load := newAtomicLoad(srv)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for n := range 2000 {
						if g == 0 && n%50 == 0 {
							load.down[n/50%5].Store(n%100 == 0)
						}
						if g == 1 && n%30 == 0 {
							// Weights move too: slowstart, agent, operator.
							load.weight[n/30%6].Store(int32(n / 30 % 4 * 20))
						}
						i := b.Pick(request(n), load, n%7-1)
						if i < -1 || i >= len(srv) {
							t.Errorf("picked %d", i)
							return
						}
						if i >= 0 {
							load.active[i].Add(1)
							load.active[i].Add(-1)
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestNoAllocs checks the hot-path promise for every algorithm.
func TestNoAllocs(t *testing.T) {
	srv := servers(8)
	reqs := make([]*Request, 64)
	for n := range reqs {
		reqs[n] = request(n)
	}
	for _, a := range algos {
		b := mustNew(t, a.bal, a.hash, srv)
		load := newFakeLoad(srv)
		load.down[3] = true
		n := 0
		allocs := testing.AllocsPerRun(1000, func() {
			b.Pick(reqs[n%len(reqs)], load, n%9-1)
			n++
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Pick, want 0", a.name, allocs)
		}
	}
}
