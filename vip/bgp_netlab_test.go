package vip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// The netlab test runs one BGP speaker per node namespace in a child
// process (this test binary again, running TestBGPHelperProcess): gobgp
// dials from its own goroutines, so the whole process must live in the
// node's namespace. The test drives each child over HTTP on a unix socket
// (a file path, reachable from any network namespace).

const bgpHelperEnv = "FULCRUM_VIP_BGP_HELPER"

// bgpHelperConfig is what the test passes to a child, as JSON in
// $FULCRUM_VIP_BGP_HELPER.
type bgpHelperConfig struct {
	Socket   string
	LocalASN uint32
	RouterID netip.Addr
	Peers    []BGPPeer
	NextHop  netip.Addr
	Device   string // where the /32s go
}

// TestBGPHelperProcess is the child's entry point; it skips unless run as
// a child.
func TestBGPHelperProcess(t *testing.T) {
	raw := os.Getenv(bgpHelperEnv)
	if raw == "" {
		t.Skip("runs only as the child process of TestBGPECMPWithBird")
	}
	if err := bgpHelperMain(raw); err != nil {
		fmt.Fprintln(os.Stderr, "bgp helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func bgpHelperMain(raw string) error {
	var cfg bgpHelperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	a, err := NewBGPAnnouncer(context.Background(), BGPOptions{
		LocalASN:     cfg.LocalASN,
		RouterID:     cfg.RouterID,
		ListenPort:   -1,
		Peers:        cfg.Peers,
		HoldTime:     DefaultBGPHoldTime,
		Keepalive:    DefaultBGPKeepalive,
		ConnectRetry: DefaultBGPConnectRetry,
		NextHop:      cfg.NextHop,
		Inner:        bgpIPAddrInner{dev: cfg.Device},
		Log:          log,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return err
	}
	reply := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(v)
	}
	vipArg := func(r *http.Request) (netip.Prefix, error) { return netip.ParsePrefix(r.FormValue("vip")) }
	mux := http.NewServeMux()
	mux.HandleFunc("POST /claim", func(w http.ResponseWriter, r *http.Request) {
		p, err := vipArg(r)
		if err == nil {
			err = a.Claim(r.Context(), p)
		}
		reply(w, "ok", err)
	})
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) {
		p, err := vipArg(r)
		if err == nil {
			err = a.Release(r.Context(), p)
		}
		reply(w, "ok", err)
	})
	mux.HandleFunc("POST /close", func(w http.ResponseWriter, r *http.Request) { reply(w, "ok", a.Close()) })
	mux.HandleFunc("GET /held", func(w http.ResponseWriter, r *http.Request) {
		held, err := a.Held()
		reply(w, held, err)
	})
	mux.HandleFunc("GET /peers", func(w http.ResponseWriter, r *http.Request) {
		ps, err := a.Peers(r.Context())
		reply(w, ps, err)
	})
	srv := &http.Server{Handler: mux}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Close()
	}()
	log.Info("helper ready", "socket", cfg.Socket)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return a.Close()
}

// bgpIPAddrInner holds VIPs as /32s on a device with the ip command; it
// stands in for the dummy-interface announcer.
type bgpIPAddrInner struct{ dev string }

func (i bgpIPAddrInner) ip(ctx context.Context, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func (i bgpIPAddrInner) Claim(ctx context.Context, p netip.Prefix) error {
	_, err := i.ip(ctx, "addr", "replace", p.String(), "dev", i.dev)
	return err
}

func (i bgpIPAddrInner) Release(ctx context.Context, p netip.Prefix) error {
	held, err := i.Held()
	if err != nil || !slices.Contains(held, p) {
		return err
	}
	_, err = i.ip(ctx, "addr", "del", p.String(), "dev", i.dev)
	return err
}

func (i bgpIPAddrInner) Held() ([]netip.Prefix, error) {
	out, err := i.ip(context.Background(), "-j", "-4", "addr", "show", "dev", i.dev)
	if err != nil {
		return nil, err
	}
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, err
	}
	var held []netip.Prefix
	for _, l := range links {
		for _, a := range l.AddrInfo {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil || a.PrefixLen != 32 || addr.IsLoopback() {
				continue
			}
			held = append(held, netip.PrefixFrom(addr, 32))
		}
	}
	return held, nil
}

func (bgpIPAddrInner) Close() error { return nil }

// bgpChild is the test's handle on one child process.
type bgpChild struct {
	node *netlab.Host
	proc *netlab.Proc
	c    *http.Client
}

func (h *bgpChild) call(method, path string, vip netip.Prefix) (string, error) {
	u := "http://helper" + path
	if vip.IsValid() {
		u += "?vip=" + vip.String()
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s on %s: %s: %s", method, path, h.node.Name(), resp.Status, b)
	}
	return string(b), nil
}

func (h *bgpChild) must(t *testing.T, method, path string, vip netip.Prefix) string {
	t.Helper()
	out, err := h.call(method, path, vip)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var bgpViaRE = regexp.MustCompile(`\bvia (\d+\.\d+\.\d+\.\d+)`)

// routerNextHops returns the next hops of the router's kernel route for vip,
// sorted; none if there is no route.
func routerNextHops(ctx context.Context, lab *netlab.Lab, r *netlab.Host, vip netip.Prefix) ([]netip.Addr, string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", r.NS(), "-4", "route", "show", vip.String()).CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("ip route show on %s: %v: %s", r.NS(), err, out)
	}
	var hops []netip.Addr
	for _, m := range bgpViaRE.FindAllStringSubmatch(string(out), -1) {
		hops = append(hops, netip.MustParseAddr(m[1]))
	}
	slices.SortFunc(hops, netip.Addr.Compare)
	return hops, string(out), nil
}

// waitRouterHops polls the router's route for vip every 10 ms until its next
// hops are want, for at most limit after start, and returns the time from
// start until it saw them.
func waitRouterHops(t *testing.T, lab *netlab.Lab, r *netlab.Host, vip netip.Prefix, want []netip.Addr, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	want = slices.Clone(want)
	slices.SortFunc(want, netip.Addr.Compare)
	var last string
	for time.Since(start) < limit {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hops, out, err := routerNextHops(ctx, lab, r, vip)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(hops, want) {
			return time.Since(start)
		}
		last = out
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("router route for %v: want next hops %v within %v; last seen:\n%s", vip, want, limit, last)
	return 0
}

func bgpChildAddrs(hs ...*bgpChild) []netip.Addr {
	var out []netip.Addr
	for _, h := range hs {
		out = append(out, h.node.Addr())
	}
	return out
}

const bgpBirdConf = `router id {{router}};
log stderr all;
debug protocols { states, events };    # in the test log if it fails
protocol device { scan time 10; }
# one route with a next hop per node (ECMP); bird adds nothing it did not learn
protocol kernel {
	ipv4 { import none; export all; };
	merge paths on;
	learn off;
}
template bgp node {
	local {{router}} as 65000;
	hold time 3;
	keepalive time 1;
	passive on;
	error wait time 1, 5;    # bird's default, 60 s growing to 300 s, delays recovery
	ipv4 { import all; export none; };
}
`

// TestBGPECMPWithBird: three nodes announce one VIP to bird2 in a router
// namespace; the router's kernel route has one next hop per announcing
// node; Release, SIGKILL, a pulled cable and Close each remove a node's
// next hop, and the time each takes is logged.
func TestBGPECMPWithBird(t *testing.T) {
	netlab.Require(t)
	netlab.RequireCommands(t, "bird2", "bird", "birdc")
	testStart := time.Now()
	lab, err := netlab.New(t, netlab.Options{Prefix: "bgp", Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	r, err := lab.AddRouter()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := strings.ReplaceAll(bgpBirdConf, "{{router}}", r.Addr().String())
	for _, n := range lab.Nodes() {
		conf += fmt.Sprintf("protocol bgp %s from node { neighbor %s as 65001; }\n", n.Name(), n.Addr())
	}
	confPath, ctl := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	bird := lab.Start(r, nil, "bird", "-f", "-c", confPath, "-s", ctl)
	birdc := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return lab.Exec(ctx, r, append([]string{"birdc", "-s", ctl}, args...)...)
	}
	bgpWaitUntil(t, 10*time.Second, "bird to answer on its control socket", func() bool {
		if bird.Exited() {
			t.Fatalf("bird exited: %s", bird.Output())
		}
		_, err := birdc("show", "status")
		return err == nil
	})

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParsePrefix("198.51.100.10/32")
	var hs []*bgpChild
	for _, n := range lab.Nodes() {
		sock := filepath.Join(dir, n.Name()+".sock")
		cfg, _ := json.Marshal(bgpHelperConfig{
			Socket: sock, LocalASN: 65001, RouterID: n.Addr(), NextHop: n.Addr(), Device: "lo",
			Peers: []BGPPeer{{Address: r.Addr(), ASN: 65000}},
		})
		p := lab.Start(n, []string{bgpHelperEnv + "=" + string(cfg)}, self, "-test.run=^TestBGPHelperProcess$")
		hs = append(hs, &bgpChild{node: n, proc: p, c: &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}},
		}})
	}
	for _, h := range hs {
		bgpWaitUntil(t, 20*time.Second, h.node.Name()+"'s helper to answer", func() bool {
			if h.proc.Exited() {
				t.Fatalf("helper on %s exited: %s", h.node.Name(), h.proc.Output())
			}
			_, err := h.call("GET", "/held", netip.Prefix{})
			return err == nil
		})
	}
	start := time.Now()
	for _, h := range hs {
		h.must(t, "POST", "/claim", vip)
		if held := h.must(t, "GET", "/held", netip.Prefix{}); !strings.Contains(held, vip.String()) {
			t.Fatalf("%s holds %s after Claim, want %v", h.node.Name(), held, vip)
		}
	}
	took := waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs...), start, 15*time.Second)
	t.Logf("three next hops %v after the first Claim (sessions come up 1-2 s after the speakers start)", took)

	// Release on n1: withdrawn at once, session stays up.
	start = time.Now()
	hs[0].must(t, "POST", "/release", vip)
	returned := time.Since(start)
	took = waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs[1], hs[2]), start, 2*time.Second)
	t.Logf("Release on n1: returned after %v; next hop gone %v after the call began", returned, took)
	if out, err := birdc("show", "protocols", "n1"); err != nil || !strings.Contains(out, "Established") {
		t.Errorf("n1's session should stay up after Release: %v\n%s", err, out)
	}
	if held := hs[0].must(t, "GET", "/held", netip.Prefix{}); strings.Contains(held, vip.String()) {
		t.Errorf("n1 still holds the VIP after Release: %s", held)
	}
	start = time.Now()
	hs[0].must(t, "POST", "/claim", vip)
	took = waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs...), start, 5*time.Second)
	t.Logf("Claim on n1 again: next hop back after %v", took)

	// SIGKILL on n2's speaker: the kernel closes the TCP session, bird
	// drops the routes at once; at worst the hold time.
	hold := DefaultBGPHoldTime
	start = time.Now()
	if err := hs[1].proc.Kill(); err != nil {
		t.Fatal(err)
	}
	took = waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs[0], hs[2]), start, hold+2*time.Second)
	t.Logf("SIGKILL of n2's speaker: next hop gone after %v (hold time %v)", took, hold)

	// Cable pulled on n3: silence, only the hold timer notices. bird starts
	// it at 75-100 % of the hold time (RFC 4271's jitter) from the last
	// message, which came at most one keepalive interval before the pull.
	start = time.Now()
	if err := lab.Cable(hs[2].node, false); err != nil {
		t.Fatal(err)
	}
	took = waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs[0]), start, hold+2*time.Second)
	t.Logf("cable pulled on n3: next hop gone after %v (hold time %v)", took, hold)
	if earliest := hold*3/4 - DefaultBGPKeepalive - 100*time.Millisecond; took < earliest {
		t.Errorf("n3's next hop went after %v, before bird's hold timer (%v, jittered) could have expired", took, hold)
	}

	// Cable back: bird retries after its error wait (1 s), the announcer
	// re-creates its failed session at once and dials within 1-2 s.
	start = time.Now()
	if err := lab.Cable(hs[2].node, true); err != nil {
		t.Fatal(err)
	}
	took = waitRouterHops(t, lab, r, vip, bgpChildAddrs(hs[0], hs[2]), start, 15*time.Second)
	t.Logf("cable plugged back on n3: next hop back after %v", took)

	// Close on n1 and n3: everything withdrawn while the processes live on.
	for _, h := range []*bgpChild{hs[0], hs[2]} {
		start = time.Now()
		h.must(t, "POST", "/close", netip.Prefix{})
		t.Logf("Close on %s returned after %v", h.node.Name(), time.Since(start))
	}
	took = waitRouterHops(t, lab, r, vip, nil, start, 2*time.Second)
	t.Logf("after Close: no route %v after the second Close began", took)
	for _, h := range []*bgpChild{hs[0], hs[2]} {
		if h.proc.Exited() {
			t.Errorf("helper on %s exited on Close", h.node.Name())
		}
		if held := h.must(t, "GET", "/held", netip.Prefix{}); !strings.Contains(held, vip.String()) {
			t.Errorf("%s dropped the VIP on Close (%s); the reconcile loop removes addresses", h.node.Name(), held)
		}
	}
	t.Logf("test body took %v", time.Since(testStart))
}
