package vip

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// readSysctls reads net.ipv4.conf.DEV.KEY inside h's namespace.
func readSysctls(t *testing.T, h *netlab.Host, keys ...string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := inNetNS(h.NS(), func() error {
		for _, k := range keys {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + k)
			if err != nil {
				return err
			}
			got[k] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// The dummy interface for active-active VIPs: created up, with ARP
// sysctls that keep the node from answering ARP for the /32s on it, which
// a client on the segment then cannot reach by ARP (it can through a
// router). Checked against the fault: with arp_ignore back at 0 the node
// answers.
func TestDummyLab(t *testing.T) {
	checkNoGoroutines(t)
	lab := newLab(t)
	n1, c := lab.Node(1), lab.Client()
	dev := "fvip0"
	ensure := func() error { return inNetNS(n1.NS(), func() error { return EnsureDummy(dev) }) }
	err := ensure()
	if errors.Is(err, ErrNoDummyDriver) {
		// This kernel cannot create dummies: the fallback is lo.
		t.Logf("%v: testing with lo instead", err)
		dev = "lo"
		err = ensure()
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := ensure(); err != nil {
		t.Fatalf("second EnsureDummy: %v", err)
	}
	if err := inNetNS(n1.NS(), func() error { return EnsureDummy("eth0") }); err == nil {
		t.Error("EnsureDummy accepted the veth eth0")
	}
	link := ipOut(t, n1, "-d", "-o", "link", "show", "dev", dev)
	if (dev != "lo" && !strings.Contains(link, "dummy")) || !strings.Contains(link, ",UP") {
		t.Fatalf("link %s: %s", dev, link)
	}
	keys := []string{dev + "/arp_ignore", dev + "/arp_announce", "all/arp_ignore", "all/arp_announce"}
	want := map[string]string{dev + "/arp_ignore": "1", dev + "/arp_announce": "2", "all/arp_ignore": "1", "all/arp_announce": "2"}
	if got := readSysctls(t, n1, keys...); len(got) != len(want) || got[keys[0]] != "1" || got[keys[1]] != "2" || got[keys[2]] != "1" || got[keys[3]] != "2" {
		t.Fatalf("sysctls %v, want %v", got, want)
	}

	var d *DummyAnnouncer
	if err := inNetNS(n1.NS(), func() error {
		var err error
		d, err = NewDummyAnnouncer(dev, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx := context.Background()
	// A /32 in the segment's subnet: if n1 answered ARP for it, the
	// client would reach it directly.
	a4 := lab.Subnet().Addr().As4()
	a4[3] = 200
	vip := netip.PrefixFrom(netip.AddrFrom4(a4), 32)
	for _, bad := range []string{vip.Addr().String() + "/24", "127.0.0.2/32"} {
		if err := d.Claim(ctx, netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("DummyAnnouncer claimed %s", bad)
		}
	}
	if err := d.Claim(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if err := d.Claim(ctx, vip); err != nil {
		t.Fatalf("second Claim: %v", err)
	}
	if held, err := d.Held(); err != nil || !equal(held, []netip.Prefix{vip}) {
		t.Fatalf("Held = %v, %v; want [%v] (never lo's own 127.0.0.1/8)", held, err, vip)
	}
	serveName(t, lab, n1, 8080)
	target := netip.AddrPortFrom(vip.Addr(), 8080)
	if got, err := askName(lab, c, target); err == nil {
		t.Fatalf("the client reached the dummy's /32 on the segment (%q): n1 answered ARP for it", got)
	}
	if mac, state := neigh(t, c, vip.Addr()); mac != "" {
		t.Fatalf("client learnt %s (%s) for the dummy's /32", mac, state)
	}

	// The fault: arp_ignore 0 everywhere, and n1 answers.
	if err := inNetNS(n1.NS(), func() error {
		return errors.Join(
			os.WriteFile("/proc/sys/net/ipv4/conf/all/arp_ignore", []byte("0"), 0o644),
			os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/arp_ignore", []byte("0"), 0o644),
			os.WriteFile("/proc/sys/net/ipv4/conf/eth0/arp_ignore", []byte("0"), 0o644))
	}); err != nil {
		t.Fatal(err)
	}
	ipOut(t, c, "neigh", "flush", "dev", "eth0")
	var got string
	for range 10 { // a FAILED entry may linger a moment after the flush
		if got, err = askName(lab, c, target); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != "n1" {
		t.Fatalf("control: with arp_ignore=0 the client should reach n1 through the /32: %q, %v", got, err)
	}

	if err := d.Release(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if err := d.Release(ctx, vip); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if held, err := d.Held(); err != nil || len(held) != 0 {
		t.Fatalf("Held after Release = %v, %v", held, err)
	}
	d.Close()
	if err := d.Claim(ctx, vip); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
}
