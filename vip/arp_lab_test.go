package vip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// inNetNS runs fn on a goroutine locked to a thread moved into the named
// network namespace, then moves the thread back. If moving back fails the
// goroutine exits still locked, so the runtime discards the thread. fn
// must do its namespace-sensitive work (opening sockets, /proc/sys)
// itself, not in goroutines it starts.
func inNetNS(ns string, fn func() error) error {
	target, err := unix.Open(filepath.Join("/var/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("setns back from %s: %w", ns, err))
			return // still locked: the thread ends with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// newLab builds a 3-node lab, or skips/fails per netlab.Require.
func newLab(t *testing.T) *netlab.Lab {
	t.Helper()
	netlab.Require(t)
	lab, err := netlab.New(t, netlab.Options{Prefix: "vip", Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	return lab
}

// arpAnnouncerIn opens an ARPAnnouncer on h's eth0, inside h's namespace,
// closed at cleanup.
func arpAnnouncerIn(t *testing.T, h *netlab.Host, opts ARPOptions) *ARPAnnouncer {
	t.Helper()
	var a *ARPAnnouncer
	err := inNetNS(h.NS(), func() error {
		var err error
		a, err = NewARPAnnouncer(h.Iface(), opts)
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", h.Name(), err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("%s: Close: %v", h.Name(), err)
		}
	})
	return a
}

// ipOut runs `ip -n NS args...`.
func ipOut(t *testing.T, h *netlab.Host, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", h.NS()}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v: %s", h.NS(), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hasAddr reports whether h's eth0 has p (exactly: address and length).
func hasAddr(t *testing.T, h *netlab.Host, p netip.Prefix) bool {
	t.Helper()
	return strings.Contains(ipOut(t, h, "-4", "-o", "addr", "show", "dev", "eth0"), " inet "+p.String()+" ")
}

// neigh returns the client's neighbour entry for a: MAC and state.
func neigh(t *testing.T, h *netlab.Host, a netip.Addr) (mac, state string) {
	t.Helper()
	f := strings.Fields(ipOut(t, h, "neigh", "show", a.String(), "dev", "eth0"))
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			mac = f[i+1]
		}
	}
	if len(f) > 0 {
		state = f[len(f)-1]
	}
	return mac, state
}

// serveName makes h answer every TCP connection on port with its name,
// on any of its addresses (the VIP included), until the test ends.
func serveName(t *testing.T, lab *netlab.Lab, h *netlab.Host, port int) {
	t.Helper()
	ln, err := lab.Listen(h, "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			io.WriteString(c, h.Name())
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// askName connects from h to addr and returns what it says.
func askName(lab *netlab.Lab, h *netlab.Host, addr netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := lab.Dial(ctx, h, "tcp4", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// Failover as a client sees it: n1 holds the VIP and serves the client,
// whose neighbour entry is REACHABLE on n1's MAC; n1 releases, n2 claims,
// and the entry moves to n2's MAC at once, with no traffic from the client
// (without the GARP it would stay on n1's MAC for 15-45 s).
func TestARPFailoverLab(t *testing.T) {
	checkNoGoroutines(t)
	lab := newLab(t)
	n1, n2, c := lab.Node(1), lab.Node(2), lab.Client()
	vip := netip.PrefixFrom(lab.VIP(), 24)
	opts := ARPOptions{Burst: 3, Interval: 50 * time.Millisecond, Refresh: 0, Managed: []netip.Prefix{vip}}
	a1 := arpAnnouncerIn(t, n1, opts)
	a2 := arpAnnouncerIn(t, n2, opts)
	serveName(t, lab, n1, 8080)
	serveName(t, lab, n2, 8080)
	ctx := context.Background()
	target := netip.AddrPortFrom(vip.Addr(), 8080)

	if err := a1.Claim(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if !hasAddr(t, n1, vip) {
		t.Fatalf("n1 lacks %v after Claim:\n%s", vip, ipOut(t, n1, "addr"))
	}
	if held, err := a1.Held(); err != nil || !equal(held, []netip.Prefix{vip}) {
		t.Fatalf("n1 Held = %v, %v; want [%v] (its own address is not managed)", held, err, vip)
	}
	if err := a1.Claim(ctx, vip); err != nil { // idempotent
		t.Fatalf("second Claim: %v", err)
	}
	if got, err := askName(lab, c, target); err != nil || got != "n1" {
		t.Fatalf("client asked the VIP: %q, %v; want n1", got, err)
	}
	mac, state := neigh(t, c, vip.Addr())
	if mac != n1.MAC().String() || state != "REACHABLE" {
		t.Fatalf("client's entry for the VIP: %s %s; want %s REACHABLE", mac, state, n1.MAC())
	}

	if err := a1.Release(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if hasAddr(t, n1, vip) {
		t.Fatal("n1 still has the VIP after Release")
	}
	if err := a1.Release(ctx, vip); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	start := time.Now()
	if err := a2.Claim(ctx, vip); err != nil {
		t.Fatal(err)
	}
	deadline := start.Add(2 * time.Second)
	for {
		mac, state = neigh(t, c, vip.Addr())
		if mac == n2.MAC().String() {
			t.Logf("client's entry on n2's MAC (%s) %v after the claim", state, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("client's entry still %s %s 2 s after n2's claim; want %s", mac, state, n2.MAC())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, err := askName(lab, c, target); err != nil || got != "n2" {
		t.Fatalf("client asked the VIP after failover: %q, %v; want n2", got, err)
	}
}

// capture collects the ARP frames arriving on h's eth0, until the test
// ends.
type capture struct {
	frames chan []byte
}

func captureARP(t *testing.T, h *netlab.Host) *capture {
	t.Helper()
	var conn *packet.Conn
	err := inNetNS(h.NS(), func() error {
		ifi, err := net.InterfaceByName(h.Iface())
		if err != nil {
			return err
		}
		conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", h.Name(), err)
	}
	cp := &capture{frames: make(chan []byte, 1024)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case cp.frames <- bytes.Clone(buf[:n]):
			default: // the test stopped reading; drop
			}
		}
	})
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return cp
}

// collect returns the frames from src that arrive within d.
func (cp *capture) collect(src net.HardwareAddr, d time.Duration) [][]byte {
	var out [][]byte
	timeout := time.After(d)
	for {
		select {
		case f := <-cp.frames:
			if len(f) >= 14 && bytes.Equal(f[6:12], src) {
				out = append(out, f)
			}
		case <-timeout:
			return out
		}
	}
}

// count counts the frames equal to req and to rep, and the others.
func count(frames [][]byte, req, rep []byte) (nreq, nrep, other int) {
	for _, f := range frames {
		switch {
		case bytes.Equal(f, req):
			nreq++
		case bytes.Equal(f, rep):
			nrep++
		default:
			other++
		}
	}
	return
}

// A Claim emits a burst of GARPs in both forms, byte for byte as
// GARPFrames says, then the refresh; none while the lease does not hold
// (a paused leader), none after Release.
func TestARPClaimEmitsBothFormsLab(t *testing.T) {
	checkNoGoroutines(t)
	lab := newLab(t)
	n1, c := lab.Node(1), lab.Client()
	vip := netip.PrefixFrom(lab.VIP(), 24)
	var lease atomic.Bool
	lease.Store(true)
	const burst, interval, refresh = 3, 50 * time.Millisecond, 300 * time.Millisecond
	a := arpAnnouncerIn(t, n1, ARPOptions{
		Burst: burst, Interval: interval, Refresh: refresh,
		Managed: []netip.Prefix{vip}, LeaseOK: lease.Load,
	})
	wantReq, wantRep, err := GARPFrames(n1.MAC(), vip.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cp := captureARP(t, c)
	ctx := context.Background()

	if err := a.Claim(ctx, vip); err != nil {
		t.Fatal(err)
	}
	// The burst: 3 of each form in 100 ms; none of the refresh yet.
	frames := cp.collect(n1.MAC(), burst*interval+100*time.Millisecond)
	nreq, nrep, other := count(frames, wantReq, wantRep)
	if nreq != burst || nrep != burst || other != 0 {
		for _, f := range frames {
			t.Logf("captured % x", f)
		}
		t.Fatalf("burst: %d requests, %d replies, %d other frames from n1; want %d, %d, 0", nreq, nrep, other, burst, burst)
	}
	// The refresh: one of each per period.
	frames = cp.collect(n1.MAC(), 2*refresh)
	if nreq, nrep, other = count(frames, wantReq, wantRep); nreq < 1 || nrep < 1 || other != 0 {
		t.Fatalf("refresh: %d requests, %d replies, %d other; want at least 1, 1, 0", nreq, nrep, other)
	}

	// Lease lost (a paused leader resumed): no GARP, and no new claim.
	lease.Store(false)
	cp.collect(n1.MAC(), 20*time.Millisecond) // a GARP already on the wire
	if frames = cp.collect(n1.MAC(), 2*refresh+100*time.Millisecond); len(frames) != 0 {
		t.Fatalf("%d frames from n1 while its lease did not hold", len(frames))
	}
	if err := a.Claim(ctx, vip); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Claim without lease = %v, want ErrLeaseLost", err)
	}

	// Lease back, Release: the refresh stops and the address goes.
	lease.Store(true)
	if err := a.Release(ctx, vip); err != nil {
		t.Fatal(err)
	}
	if frames = cp.collect(n1.MAC(), 2*refresh); len(frames) != 0 {
		t.Fatalf("%d frames from n1 after Release", len(frames))
	}
	if hasAddr(t, n1, vip) {
		t.Fatal("VIP still on n1 after Release")
	}

	// Close stops everything; methods then fail.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Claim(ctx, vip); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	if _, err := a.Held(); !errors.Is(err, ErrClosed) {
		t.Errorf("Held after Close = %v, want ErrClosed", err)
	}
}
