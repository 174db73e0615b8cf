package vip

import (
	"net/netip"
	"testing"
	"time"
)

// A node that restarts after a crash finds the VIP its previous run left
// on eth0; it is not the owner, so the reconciler removes it at start-up,
// and leaves the node's own address alone. Made desired, the VIP comes
// back.
func TestReconcilerRemovesLeftoverLab(t *testing.T) {
	checkNoGoroutines(t)
	lab := newLab(t)
	n3 := lab.Node(3)
	vip := netip.PrefixFrom(lab.VIP(), 24)
	own := netip.PrefixFrom(n3.Addr(), 24)
	ipOut(t, n3, "addr", "add", vip.String(), "dev", "eth0") // the crashed run's
	if !hasAddr(t, n3, vip) {
		t.Fatal("setup: VIP not on n3")
	}

	a := arpAnnouncerIn(t, n3, ARPOptions{Burst: 1, Managed: []netip.Prefix{vip}})
	held, err := a.Held()
	if err != nil || !equal(held, []netip.Prefix{vip}) {
		t.Fatalf("Held = %v, %v; want [%v]", held, err, vip)
	}
	d := newDesired()
	r := NewReconciler(a, d.get, nil, WithResync(time.Hour))
	startReconciler(t, r)
	waitFor(t, 2*time.Second, "leftover VIP not removed at start-up", func() bool { return !hasAddr(t, n3, vip) })
	if !hasAddr(t, n3, own) {
		t.Fatalf("n3's own address %v is gone", own)
	}
	waitFor(t, 2*time.Second, "status", func() bool {
		s := r.Status()
		return len(s.Actual) == 0 && len(s.Desired) == 0 && s.LastError == ""
	})

	d.set(vip.String())
	r.Wake()
	waitFor(t, 2*time.Second, "desired VIP not claimed", func() bool { return hasAddr(t, n3, vip) })
	waitFor(t, 2*time.Second, "status", func() bool {
		s := r.Status()
		return equal(s.Actual, []netip.Prefix{vip}) && !s.LastAnnounce.IsZero()
	})
}
