package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// refusedDial is how long a dial to a refused address is given: a
// dropped SYN is retransmitted after a second, so a connect that has not
// happened within this much was dropped, not answered.
const refusedDial = 300 * time.Millisecond

// expectDropped dials addr and wants a timeout (a dropped SYN), not a
// connection and not a reset.
func expectDropped(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, refusedDial)
	if err == nil {
		c.Close()
		t.Fatalf("dial %s: connected, want the SYN dropped", addr)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("dial %s: %v, want a timeout (a dropped SYN, not a reset)", addr, err)
	}
}

func expectServed(t *testing.T, c *http.Client, url string) {
	t.Helper()
	code, body, err := get(c, url)
	if err != nil || code != 200 || body != "app\n" {
		t.Fatalf("GET %s: %d %q %v", url, code, body, err)
	}
}

func wildcardPort(t *testing.T, e *Engine, bind string) string {
	t.Helper()
	a, ok := e.Addrs()[bind]
	if !ok {
		t.Fatalf("no listener for %s: %v", bind, e.Addrs())
	}
	return fmt.Sprint(a.(*net.TCPAddr).Port)
}

// TestRefuseDropsNewConnectionsToAnAddress: Refuse drops new connections
// to the refused address only (so the client retransmits its SYN to
// wherever the address moves), keeps serving the connections already
// open, applies to listeners bound later, and is undone by Refuse(nil).
func TestRefuseDropsNewConnectionsToAnAddress(t *testing.T) {
	b := startBackend(t, "app", nil)
	e, _ := startEngine(t, fmt.Sprintf(`
frontends: [{name: web, bind: ["0.0.0.0:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s, address: %q}]}]
`, b.addr))
	port := wildcardPort(t, e, "0.0.0.0:0")
	kept := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer kept.CloseIdleConnections()
	expectServed(t, kept, "http://127.0.0.2:"+port+"/")

	if err := e.Refuse([]netip.Addr{netip.MustParseAddr("127.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	expectDropped(t, "127.0.0.2:"+port)
	fresh := newClient(t)
	expectServed(t, fresh, "http://127.0.0.1:"+port+"/")
	expectServed(t, kept, "http://127.0.0.2:"+port+"/") // the open connection
	if got := frontendStats(t, e, "web").TotalSessions; got != 2 {
		t.Errorf("frontend accepted %d connections, want 2 (the kept one and one to 127.0.0.1)", got)
	}

	// A listener bound while refusing refuses too.
	if err := e.Apply(mustParse(t, fmt.Sprintf(`
frontends: [{name: web, bind: ["0.0.0.0:0", "127.0.0.2:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s, address: %q}]}]
`, b.addr))); err != nil {
		t.Fatal(err)
	}
	expectDropped(t, e.Addrs()["127.0.0.2:0"].String())

	if err := e.Refuse(nil); err != nil {
		t.Fatal(err)
	}
	expectServed(t, fresh, "http://127.0.0.2:"+port+"/")
	expectServed(t, fresh, "http://"+e.Addrs()["127.0.0.2:0"].String()+"/")
}

// TestRefuseIPv6: the filter reads IPv6 destinations, and IPv4 ones on a
// dual-stack listener.
func TestRefuseIPv6(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	b := startBackend(t, "app", nil)
	e, _ := startEngine(t, fmt.Sprintf(`
frontends: [{name: web, bind: ["[::]:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s, address: %q}]}]
`, b.addr))
	port := wildcardPort(t, e, "[::]:0")
	c := newClient(t)
	if err := e.Refuse([]netip.Addr{netip.MustParseAddr("::1")}); err != nil {
		t.Fatal(err)
	}
	expectDropped(t, "[::1]:"+port)
	expectServed(t, c, "http://127.0.0.1:"+port+"/")
	if err := e.Refuse([]netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::2")}); err != nil {
		t.Fatal(err)
	}
	expectDropped(t, "127.0.0.1:"+port)
	expectServed(t, c, "http://[::1]:"+port+"/")
}

// TestIdleSeesConnectionsAndTheAcceptQueue: Idle is false while a client
// connection is open, and backlog counts handshakes the kernel completed
// that nobody accepted yet (a hand-over must wait for those too).
func TestIdleSeesConnectionsAndTheAcceptQueue(t *testing.T) {
	b := startBackend(t, "app", nil)
	e, addr := startEngine(t, oneBackendConfig(b.addr))
	if !e.Idle() {
		t.Fatal("a fresh engine is not idle")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the engine to see the connection", func() bool { return !e.Idle() })
	c.Close()
	waitFor(t, 2*time.Second, "the engine to be idle again", e.Idle)

	ln, err := listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := &listener{addr: "test", ln: ln}
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	waitFor(t, 2*time.Second, "two connections in the accept queue", func() bool { return l.backlog() == 2 })
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if n := l.backlog(); n != 1 {
		t.Errorf("after one accept the backlog is %d, want 1", n)
	}
}
