package proxy

import (
	"fmt"
	"testing"
	"time"
)

// TestBindFreebind: a frontend may bind an address this host does not
// hold (the VIP on a passive node). 192.0.2.0/24 is TEST-NET-1, never
// assigned here; no traffic is sent to it.
func TestBindFreebind(t *testing.T) {
	e, _ := startEngine(t, `
frontends: [{name: vip, bind: ["192.0.2.10:18080"], default_backend: b}]
backends: [{name: b, servers: [{name: s, address: "127.0.0.1:9"}]}]
`)
	addrs := e.Addrs()
	if a := addrs["192.0.2.10:18080"]; a == nil || a.String() != "192.0.2.10:18080" {
		t.Fatalf("listener on a foreign address: %v", addrs)
	}
}

// TestSmartAccept: an HTTP frontend's listener takes a connection once its
// first bytes are there (TCP_DEFER_ACCEPT), so a client that connects and
// says nothing costs the engine nothing for a while; a TCP frontend's
// listener (the server may speak first) takes connections at once, and a
// reload that turns a bind from one mode to the other follows.
func TestSmartAccept(t *testing.T) {
	b := startBackend(t, "app", nil)
	doc := `
frontends: [{name: web, mode: %s, bind: ["127.0.0.1:0"], default_backend: app}]
backends: [{name: app, mode: %s, servers: [{name: s, address: %q}]}]
`
	e, addr := startEngine(t, fmt.Sprintf(doc, "http", "http", b.addr))
	silent := dialProxy(t, addr)
	defer silent.Close()
	time.Sleep(300 * time.Millisecond) // the workload: a client that says nothing
	if n := frontendStats(t, e, "web").TotalSessions; n != 0 {
		t.Errorf("HTTP frontend: a connection without a byte was accepted at once (%d sessions)", n)
	}
	c := newClient(t)
	if code, body, err := get(c, "http://"+addr+"/"); err != nil || code != 200 || body != "app\n" {
		t.Fatalf("GET: %d %q %v", code, body, err)
	}

	if err := e.Apply(mustParse(t, fmt.Sprintf(doc, "tcp", "tcp", b.addr))); err != nil {
		t.Fatal(err)
	}
	before := frontendStats(t, e, "web").TotalSessions
	quiet := dialProxy(t, e.Addrs()["127.0.0.1:0"].String())
	defer quiet.Close()
	waitFor(t, 500*time.Millisecond, "the TCP frontend to take a silent connection at once", func() bool {
		return frontendStats(t, e, "web").TotalSessions > before
	})
}
