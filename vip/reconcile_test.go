package vip

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAnnouncer is an in-memory address table with injectable failures.
type fakeAnnouncer struct {
	mu       sync.Mutex
	table    map[netip.Prefix]bool
	claims   map[netip.Prefix]int
	releases map[netip.Prefix]int
	// The next N calls fail.
	failHeld, failClaim, failRelease int
	// failAnnounce: the next N claims add the address, then fail (as a
	// GARP that could not be sent).
	failAnnounce int
}

func newFake(held ...string) *fakeAnnouncer {
	f := &fakeAnnouncer{table: map[netip.Prefix]bool{}, claims: map[netip.Prefix]int{}, releases: map[netip.Prefix]int{}}
	for _, h := range held {
		f.table[netip.MustParsePrefix(h)] = true
	}
	return f
}

var errInjected = errors.New("injected failure")

func (f *fakeAnnouncer) Claim(ctx context.Context, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims[p]++
	if f.failClaim > 0 {
		f.failClaim--
		return errInjected
	}
	f.table[p] = true
	if f.failAnnounce > 0 {
		f.failAnnounce--
		return errInjected
	}
	return nil
}

func (f *fakeAnnouncer) Release(ctx context.Context, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.releases[p]++
	if f.failRelease > 0 {
		f.failRelease--
		return errInjected
	}
	delete(f.table, p)
	return nil
}

func (f *fakeAnnouncer) Held() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failHeld > 0 {
		f.failHeld--
		return nil, errInjected
	}
	return slices.SortedFunc(maps.Keys(f.table), comparePrefix), nil
}

func (f *fakeAnnouncer) Close() error { return nil }

func (f *fakeAnnouncer) held() []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.SortedFunc(maps.Keys(f.table), comparePrefix)
}

func (f *fakeAnnouncer) counts(p string) (claims, releases int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.claims[netip.MustParsePrefix(p)], f.releases[netip.MustParsePrefix(p)]
}

func prefixes(ss ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// desiredSet is a desired() the test changes.
type desiredSet struct {
	p atomic.Pointer[[]netip.Prefix]
}

func newDesired(ss ...string) *desiredSet {
	d := &desiredSet{}
	d.set(ss...)
	return d
}
func (d *desiredSet) set(ss ...string) {
	ps := prefixes(ss...)
	d.p.Store(&ps)
}
func (d *desiredSet) get() []netip.Prefix { return slices.Clone(*d.p.Load()) }

// waitFor polls cond every 5 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkNoGoroutines fails the test, at cleanup, if goroutines running
// code of this package's announcers or reconciler are left (polled for
// up to 2 s).
func checkNoGoroutines(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		marks := []string{"vip.(*Reconciler)", "vip.(*ARPAnnouncer)", "vip.(*DummyAnnouncer)"}
		var stacks string
		for range 200 {
			buf := make([]byte, 1<<20)
			stacks = string(buf[:runtime.Stack(buf, true)])
			leaked := false
			for g := range strings.SplitSeq(stacks, "\n\n") {
				for _, m := range marks {
					if strings.Contains(g, m) {
						leaked = true
					}
				}
			}
			if !leaked {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Errorf("goroutines left behind:\n%s", stacks)
	})
}

// startReconciler runs r until the test ends and checks that Run returns.
// Call checkNoGoroutines before creating anything r uses.
func startReconciler(t *testing.T, r *Reconciler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of cancel")
		}
	})
}

func equal(a, b []netip.Prefix) bool { return slices.Equal(a, b) }

func TestReconcilerRemovesLeftoverAtStart(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake("10.0.0.100/24", "10.0.0.101/32")
	d := newDesired("10.0.0.101/32")
	r := NewReconciler(f, d.get, nil, WithResync(time.Hour))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "leftover 10.0.0.100/24 not removed", func() bool {
		return equal(f.held(), prefixes("10.0.0.101/32"))
	})
	// The desired VIP, already there, was re-announced once at start-up:
	// this process had not announced it.
	waitFor(t, 2*time.Second, "held desired VIP not re-announced at start-up", func() bool {
		c, _ := f.counts("10.0.0.101/32")
		return c == 1
	})
	waitFor(t, 2*time.Second, "status", func() bool {
		s := r.Status()
		return equal(s.Desired, prefixes("10.0.0.101/32")) && equal(s.Actual, prefixes("10.0.0.101/32")) &&
			!s.LastAnnounce.IsZero() && s.LastError == ""
	})
	if _, rel := f.counts("10.0.0.101/32"); rel != 0 {
		t.Errorf("desired VIP released %d times", rel)
	}
}

func TestReconcilerFollowsDesired(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake()
	d := newDesired("10.0.0.100/24")
	// A resync of an hour: only Wake can make the loop notice changes.
	r := NewReconciler(f, d.get, nil, WithResync(time.Hour))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "first VIP not claimed", func() bool { return equal(f.held(), prefixes("10.0.0.100/24")) })

	d.set("10.0.0.100/24", "10.0.0.200/24")
	r.Wake()
	waitFor(t, 2*time.Second, "second VIP not claimed after Wake", func() bool {
		return equal(f.held(), prefixes("10.0.0.100/24", "10.0.0.200/24"))
	})
	d.set("10.0.0.200/24")
	for range 100 { // wake-ups coalesce and never block
		r.Wake()
	}
	waitFor(t, 2*time.Second, "first VIP not released after Wake", func() bool { return equal(f.held(), prefixes("10.0.0.200/24")) })
	d.set()
	r.Wake()
	waitFor(t, 2*time.Second, "VIP not released when nothing is desired", func() bool { return len(f.held()) == 0 })
	waitFor(t, 2*time.Second, "status", func() bool {
		s := r.Status()
		return len(s.Desired) == 0 && len(s.Actual) == 0
	})
	// Wake alone never re-announces: one claim each.
	for _, p := range []string{"10.0.0.100/24", "10.0.0.200/24"} {
		if c, rel := f.counts(p); c != 1 || rel != 1 {
			t.Errorf("%s: %d claims, %d releases; want 1, 1", p, c, rel)
		}
	}
}

func TestReconcilerResyncWithoutWake(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake()
	d := newDesired("10.0.0.100/24")
	r := NewReconciler(f, d.get, nil, WithResync(20*time.Millisecond))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "VIP not claimed", func() bool { return equal(f.held(), prefixes("10.0.0.100/24")) })
	// Someone removes the address behind the loop's back: the periodic
	// pass puts it back, with no wake-up.
	f.mu.Lock()
	delete(f.table, netip.MustParsePrefix("10.0.0.100/24"))
	f.mu.Unlock()
	waitFor(t, 2*time.Second, "removed VIP not re-claimed by the resync", func() bool { return equal(f.held(), prefixes("10.0.0.100/24")) })
	// ... and a stray address goes.
	f.mu.Lock()
	f.table[netip.MustParsePrefix("10.0.0.9/24")] = true
	f.mu.Unlock()
	waitFor(t, 2*time.Second, "stray VIP not released by the resync", func() bool { return equal(f.held(), prefixes("10.0.0.100/24")) })
	if c, _ := f.counts("10.0.0.100/24"); c != 2 {
		t.Errorf("%d claims; want 2 (start, re-add)", c)
	}
}

func TestReconcilerKickReannounces(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake()
	d := newDesired("10.0.0.100/24")
	r := NewReconciler(f, d.get, nil, WithResync(time.Hour))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "VIP not claimed", func() bool { c, _ := f.counts("10.0.0.100/24"); return c == 1 })
	r.Kick()
	waitFor(t, 2*time.Second, "Kick did not re-announce", func() bool { c, _ := f.counts("10.0.0.100/24"); return c == 2 })
	r.Wake()
	time.Sleep(50 * time.Millisecond)
	if c, _ := f.counts("10.0.0.100/24"); c != 2 {
		t.Errorf("Wake re-announced: %d claims, want 2", c)
	}
}

func TestReconcilerRetriesErrors(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake("10.0.0.7/24")
	f.failHeld = 1    // first pass: cannot read the state, so must not act
	f.failClaim = 2   // then two failed claims
	f.failRelease = 1 // and one failed release of the leftover
	d := newDesired("10.0.0.100/24")
	r := NewReconciler(f, d.get, nil, WithResync(time.Hour)) // retries do not wait for the resync
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "first failure not reported", func() bool {
		return strings.Contains(r.Status().LastError, "injected failure")
	})
	waitFor(t, 5*time.Second, "loop did not converge after failures", func() bool {
		return equal(f.held(), prefixes("10.0.0.100/24"))
	})
	waitFor(t, 2*time.Second, "error not cleared after a clean pass", func() bool {
		s := r.Status()
		return s.LastError == "" && s.LastErrorAt.IsZero() && equal(s.Actual, prefixes("10.0.0.100/24"))
	})
	c, _ := f.counts("10.0.0.100/24")
	_, rel := f.counts("10.0.0.7/24")
	if c != 3 || rel != 2 {
		t.Errorf("%d claims, %d releases; want 3, 2", c, rel)
	}
}

// A Claim that added the address but could not announce it is retried,
// although the address is now held.
func TestReconcilerRetriesFailedAnnounce(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake()
	f.failAnnounce = 1
	d := newDesired("10.0.0.100/24")
	r := NewReconciler(f, d.get, nil, WithResync(time.Hour))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "failed announcement not retried", func() bool { c, _ := f.counts("10.0.0.100/24"); return c == 2 })
	waitFor(t, 2*time.Second, "error not cleared", func() bool { return r.Status().LastError == "" })
	time.Sleep(50 * time.Millisecond)
	if c, _ := f.counts("10.0.0.100/24"); c != 2 {
		t.Errorf("%d claims after a successful retry; want 2", c)
	}
}

func TestReconcilerRunOnceAndStop(t *testing.T) {
	checkNoGoroutines(t)
	f := newFake()
	r := NewReconciler(f, func() []netip.Prefix { return nil }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 2*time.Second, "no pass", func() bool { return !r.Status().LastPass.IsZero() })
	if err := r.Run(ctx); err == nil {
		t.Error("second Run did not fail")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestReconcileStatusJSON(t *testing.T) {
	s := ReconcileStatus{Desired: prefixes("10.0.0.100/24"), Actual: []netip.Prefix{}, LastError: "boom"}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"desired":["10.0.0.100/24"],"actual":[],"last_error":"boom"}`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
}

func TestNormalize(t *testing.T) {
	got := normalize([]netip.Prefix{netip.MustParsePrefix("10.0.0.2/32"), {}, netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/32")})
	if !equal(got, prefixes("10.0.0.1/24", "10.0.0.2/32")) {
		t.Errorf("normalize = %v", got)
	}
}
