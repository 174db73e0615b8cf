package vip

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
	"github.com/osrg/gobgp/v3/pkg/server"

	"github.com/fulcrum-lb/fulcrum/test/ports"
)

func bgpValidOptions() BGPOptions {
	return BGPOptions{
		LocalASN:     65001,
		RouterID:     netip.MustParseAddr("10.0.0.11"),
		ListenPort:   -1,
		Peers:        []BGPPeer{{Address: netip.MustParseAddr("10.0.0.1"), ASN: 65000}},
		HoldTime:     DefaultBGPHoldTime,
		Keepalive:    DefaultBGPKeepalive,
		ConnectRetry: DefaultBGPConnectRetry,
		NextHop:      netip.MustParseAddr("10.0.0.11"),
		Inner:        &bgpFakeInner{},
	}
}

func TestBGPOptionsValidate(t *testing.T) {
	if err := bgpValidOptions().Validate(); err != nil {
		t.Fatalf("valid options rejected: %v", err)
	}
	v6 := netip.MustParseAddr("2001:db8::1")
	peer := func(p BGPPeer) func(*BGPOptions) { return func(o *BGPOptions) { o.Peers = []BGPPeer{p} } }
	for name, mod := range map[string]func(*BGPOptions){
		"no local asn":         func(o *BGPOptions) { o.LocalASN = 0 },
		"no router id":         func(o *BGPOptions) { o.RouterID = netip.Addr{} },
		"ipv6 router id":       func(o *BGPOptions) { o.RouterID = v6 },
		"listen port 0":        func(o *BGPOptions) { o.ListenPort = 0 },
		"listen port too big":  func(o *BGPOptions) { o.ListenPort = 70000 },
		"no peers":             func(o *BGPOptions) { o.Peers = nil },
		"peer without asn":     peer(BGPPeer{Address: netip.MustParseAddr("10.0.0.1")}),
		"peer without address": peer(BGPPeer{ASN: 65000}),
		"ipv6 peer":            peer(BGPPeer{Address: v6, ASN: 65000}),
		"peer twice": func(o *BGPOptions) {
			o.Peers = append(o.Peers, o.Peers[0])
		},
		"hold time 0":           func(o *BGPOptions) { o.HoldTime = 0 },
		"hold time 2s":          func(o *BGPOptions) { o.HoldTime = 2 * time.Second },
		"hold time fractional":  func(o *BGPOptions) { o.HoldTime = 3500 * time.Millisecond },
		"keepalive 0":           func(o *BGPOptions) { o.Keepalive = 0 },
		"keepalive = hold":      func(o *BGPOptions) { o.Keepalive = o.HoldTime },
		"keepalive fractional":  func(o *BGPOptions) { o.Keepalive = 1500 * time.Millisecond },
		"connect retry 0":       func(o *BGPOptions) { o.ConnectRetry = 0 },
		"connect retry 500ms":   func(o *BGPOptions) { o.ConnectRetry = 500 * time.Millisecond },
		"no next hop":           func(o *BGPOptions) { o.NextHop = netip.Addr{} },
		"ipv6 next hop":         func(o *BGPOptions) { o.NextHop = v6 },
		"no inner announcer":    func(o *BGPOptions) { o.Inner = nil },
		"listen port negative2": func(o *BGPOptions) { o.ListenPort = -2 },
	} {
		o := bgpValidOptions()
		mod(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, o)
		}
		if a, err := NewBGPAnnouncer(context.Background(), o); err == nil {
			a.Close()
			t.Errorf("%s: NewBGPAnnouncer accepted invalid options", name)
		}
	}
}

// bgpFakeInner holds addresses in memory. Its Release runs onRelease first,
// so a test can look at the world at the moment the address goes.
type bgpFakeInner struct {
	mu        sync.Mutex
	held      []netip.Prefix
	ops       []string
	closed    bool
	onRelease func(netip.Prefix)
}

func (f *bgpFakeInner) Claim(_ context.Context, a netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "claim "+a.String())
	if !slices.Contains(f.held, a) {
		f.held = append(f.held, a)
	}
	return nil
}

func (f *bgpFakeInner) Release(_ context.Context, a netip.Prefix) error {
	f.mu.Lock()
	hook := f.onRelease
	f.mu.Unlock()
	if hook != nil {
		hook(a)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "release "+a.String())
	f.held = slices.DeleteFunc(f.held, func(p netip.Prefix) bool { return p == a })
	return nil
}

func (f *bgpFakeInner) Held() ([]netip.Prefix, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.held), nil
}

func (f *bgpFakeInner) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// bgpRIB returns the IPv4 prefixes in srv's global RIB and their next
// hops.
func bgpRIB(t *testing.T, srv *server.BgpServer) map[netip.Prefix]netip.Addr {
	t.Helper()
	out := map[netip.Prefix]netip.Addr{}
	err := srv.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast()},
		func(d *api.Destination) {
			for _, p := range d.Paths {
				attrs, err := apiutil.GetNativePathAttributes(p)
				if err != nil {
					t.Errorf("path attributes of %s: %v", d.Prefix, err)
					continue
				}
				for _, a := range attrs {
					if nh, ok := a.(*bgp.PathAttributeNextHop); ok {
						out[netip.MustParsePrefix(d.Prefix)], _ = netip.AddrFromSlice(nh.Value.To4())
					}
				}
			}
		})
	if err != nil {
		t.Fatalf("ListPath: %v", err)
	}
	return out
}

func bgpWaitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// bgpTestLogger logs to t (after the test, to nowhere).
func bgpTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(bgpTWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type bgpTWriter struct{ t *testing.T }

func (w bgpTWriter) Write(b []byte) (int, error) {
	defer func() { recover() }() // a log line after the test ended
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestBGPAnnouncerAgainstGoBGPPeer runs the announcer against a second
// gobgp speaker on 127.0.0.1 (no root, no namespaces): the peer learns
// the route with this node as next hop; Release withdraws before the
// address goes; Close withdraws everything and ends the session.
func TestBGPAnnouncerAgainstGoBGPPeer(t *testing.T) {
	port := ports.Loopback(t, 1)[0]
	peerSrv := server.NewBgpServer(server.LoggerOption(newGoBGPLogger(slog.New(slog.DiscardHandler))))
	go peerSrv.Serve()
	if err := peerSrv.StartBgp(context.Background(), &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "10.0.0.1", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peerSrv.StopBgp(context.Background(), &api.StopBgpRequest{}) })

	inner := &bgpFakeInner{}
	o := bgpValidOptions()
	o.Peers = []BGPPeer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: uint16(port)}}
	o.Inner = inner
	o.Log = bgpTestLogger(t)
	a, err := NewBGPAnnouncer(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := peerSrv.AddPeer(context.Background(), &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 3, KeepaliveInterval: 1}},
	}}); err != nil {
		t.Fatal(err)
	}
	took := bgpWaitUntil(t, 10*time.Second, "the session to come up", func() bool {
		ps, err := a.Peers(context.Background())
		return err == nil && len(ps) == 1 && ps[0].Established()
	})
	t.Logf("session established after %v", took)

	vip1 := netip.MustParsePrefix("198.51.100.1/32")
	vip2 := netip.MustParsePrefix("198.51.100.2/32")
	ctx := context.Background()

	if err := a.Claim(ctx, netip.MustParsePrefix("198.51.100.0/24")); err == nil {
		t.Error("Claim of a /24 succeeded")
	}
	if err := a.Claim(ctx, netip.MustParsePrefix("2001:db8::1/128")); err == nil {
		t.Error("Claim of an IPv6 /128 succeeded")
	}
	if len(inner.ops) != 0 {
		t.Errorf("invalid claims reached the inner announcer: %v", inner.ops)
	}

	if err := a.Claim(ctx, vip1); err != nil {
		t.Fatal(err)
	}
	took = bgpWaitUntil(t, 5*time.Second, "the peer to learn "+vip1.String(), func() bool {
		return bgpRIB(t, peerSrv)[vip1] == o.NextHop
	})
	t.Logf("route learnt %v after Claim", took)
	if err := a.Claim(ctx, vip1); err != nil { // re-announce
		t.Fatalf("second Claim: %v", err)
	}
	if held, _ := a.Held(); !slices.Equal(held, []netip.Prefix{vip1}) {
		t.Errorf("Held = %v, want [%v]", held, vip1)
	}

	// At the moment the inner announcer removes the address, the route
	// must be out of our RIB and its withdrawal on the wire.
	var stillAnnounced bool
	var mu sync.Mutex
	inner.mu.Lock()
	inner.onRelease = func(p netip.Prefix) {
		_, local := bgpRIB(t, a.srv)[p]
		mu.Lock()
		stillAnnounced = local
		mu.Unlock()
	}
	inner.mu.Unlock()
	start := time.Now()
	if err := a.Release(ctx, vip1); err != nil {
		t.Fatal(err)
	}
	released := time.Since(start)
	took = bgpWaitUntil(t, 2*time.Second, "the peer to drop "+vip1.String(), func() bool {
		_, ok := bgpRIB(t, peerSrv)[vip1]
		return !ok
	})
	t.Logf("Release took %v; the peer had dropped the route %v after it returned", released, took)
	mu.Lock()
	if stillAnnounced {
		t.Error("the inner announcer released the address while the route was still announced")
	}
	mu.Unlock()
	if held, _ := a.Held(); len(held) != 0 {
		t.Errorf("Held after Release = %v", held)
	}

	for _, v := range []netip.Prefix{vip1, vip2} {
		if err := a.Claim(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	bgpWaitUntil(t, 5*time.Second, "the peer to learn both VIPs", func() bool { return len(bgpRIB(t, peerSrv)) == 2 })
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	took = bgpWaitUntil(t, 2*time.Second, "the peer to drop every route", func() bool { return len(bgpRIB(t, peerSrv)) == 0 })
	t.Logf("peer had no route %v after Close returned", took)
	inner.mu.Lock()
	closed, held := inner.closed, slices.Clone(inner.held)
	inner.mu.Unlock()
	if !closed {
		t.Error("Close did not close the inner announcer")
	}
	if len(held) != 2 {
		t.Errorf("Close removed addresses (held %v); the reconcile loop does that", held)
	}
	if err := a.Claim(ctx, vip1); !errors.Is(err, ErrClosed) {
		t.Errorf("Claim after Close = %v, want ErrClosed", err)
	}
	inner.mu.Lock()
	inner.onRelease = nil
	inner.mu.Unlock()
	if err := a.Release(ctx, vip1); err != nil {
		t.Errorf("Release after Close = %v, want the address removed", err)
	}
	if held, _ := a.Held(); !slices.Equal(held, []netip.Prefix{vip2}) {
		t.Errorf("Held after Close and Release = %v, want [%v]", held, vip2)
	}
}
