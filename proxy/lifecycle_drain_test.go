package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestDrainStopsKeepAlive: a draining engine closes idle keep-alive
// connections, answers Connection: close, and still serves new clients.
func TestDrainStopsKeepAlive(t *testing.T) {
	be := startBackend(t, "app", nil)
	e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends: [{name: web, bind: ["127.0.0.1:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s1, address: %q}]}]
`, be.addr))
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	br := bufio.NewReader(idle)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.Close {
		t.Fatalf("before drain: %v close=%v", err, resp != nil && resp.Close)
	}
	io.Copy(io.Discard, resp.Body)

	e.Drain(true)
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("an idle keep-alive connection stayed open through a drain")
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("a new client during the drain: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("during the drain: status %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	// The count drops just after the response's last byte is written.
	deadline := time.Now().Add(2 * time.Second)
	for e.InFlight() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := e.InFlight(); n != 0 {
		t.Errorf("in flight after the responses: %d", n)
	}
	e.Drain(false)
	c2, _ := net.Dial("tcp", addr)
	defer c2.Close()
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.Close {
		t.Errorf("after resume: %v, close=%v; want keep-alive again", err, resp != nil && resp.Close)
	}
}
