package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func parkedConns(e *Engine) int {
	e.parker.mu.Lock()
	defer e.parker.mu.Unlock()
	return len(e.parker.conns)
}

// parkConfig: http_request and http_keep_alive are both wait.
func parkConfig(backend string, wait time.Duration) string {
	return fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s, http_keep_alive: %s, http_request: %[1]s}}
frontends: [{name: web, bind: ["127.0.0.1:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s, address: %q}]}]
`, wait, backend)
}

// parkSilentThenKept opens a connection that sends nothing and waits for
// it to park (it reaches the engine when TCP_DEFER_ACCEPT stops waiting
// for its first bytes, after a SYN-ACK retransmission: about 1 s), then a
// keep-alive connection that has served one request, parked too.
func parkSilentThenKept(t *testing.T, e *Engine, addr string) (silent, kept net.Conn) {
	t.Helper()
	silent = dialProxy(t, addr)
	waitFor(t, 6*time.Second, "the silent connection to park", func() bool { return parkedConns(e) == 1 })
	kept = dialProxy(t, addr)
	sendGet(t, kept, bufio.NewReader(kept))
	waitFor(t, 2*time.Second, "both connections to park", func() bool { return parkedConns(e) == 2 })
	return silent, kept
}

// sendGet writes one request on c and reads the answer's status line and
// body (the test backend answers "app\n").
func sendGet(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := br.ReadString('\n')
	if err != nil || status != "HTTP/1.1 200 OK\r\n" {
		t.Fatalf("status %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, 4)
	if _, err := io.ReadFull(br, body); err != nil || string(body) != "app\n" {
		t.Fatalf("body %q %v", body, err)
	}
}

// TestParkedConnectionIsServedAgain: a keep-alive connection idle for
// longer than parkAfter gives up its goroutine to the parker, and its next
// request is served as before, on the same connection.
func TestParkedConnectionIsServedAgain(t *testing.T) {
	b := startBackend(t, "app", nil)
	e, addr := startEngine(t, parkConfig(b.addr, 800*time.Millisecond))
	c := dialProxy(t, addr)
	br := bufio.NewReader(c)
	for i := range 3 {
		sendGet(t, c, br)
		waitFor(t, 2*time.Second, fmt.Sprintf("the connection to park (round %d)", i), func() bool { return parkedConns(e) == 1 })
	}
	sendGet(t, c, br)
	if got := frontendStats(t, e, "web"); got.TotalSessions != 1 || got.CurSessions != 1 {
		t.Errorf("one connection, parked and resumed thrice: stot %d scur %d, want 1 1", got.TotalSessions, got.CurSessions)
	}
	// A client closing a parked connection wakes it: the session ends at
	// once, not at the keep-alive timeout (800 ms).
	waitFor(t, 2*time.Second, "the connection to park again", func() bool { return parkedConns(e) == 1 })
	c.Close()
	waitFor(t, 500*time.Millisecond, "the session to end on the client's close", func() bool {
		return frontendStats(t, e, "web").CurSessions == 0
	})
}

// TestParkedConnectionTimesOut: the parker closes a parked keep-alive
// connection, and a parked connection that never sent a request, when
// their timeouts pass, and ends their sessions.
func TestParkedConnectionTimesOut(t *testing.T) {
	b := startBackend(t, "app", nil)
	e, addr := startEngine(t, parkConfig(b.addr, 2*time.Second))
	silent, kept := parkSilentThenKept(t, e, addr)
	start := time.Now()
	for _, c := range []net.Conn{silent, kept} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if err != io.EOF {
			t.Errorf("a parked connection past its timeout: read %d %v, want EOF", n, err)
		}
	}
	// 2 s timeouts, the sweep every 250 ms: closed within about 2.3 s of
	// parking (generous bound: this is about closing at all).
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("parked connections closed %v after parking", took)
	}
	waitFor(t, 2*time.Second, "the sessions to end", func() bool {
		return frontendStats(t, e, "web").CurSessions == 0 && parkedConns(e) == 0
	})
}

// TestDrainAndShutdownCloseParkedConnections: Drain closes parked
// keep-alive connections but not a parked new one; Shutdown closes that
// one too and returns (no goroutine is left waiting for it).
func TestDrainAndShutdownCloseParkedConnections(t *testing.T) {
	b := startBackend(t, "app", nil)
	e, addr := startEngine(t, parkConfig(b.addr, 5*time.Second))
	fresh, kept := parkSilentThenKept(t, e, addr)
	e.Drain(true)
	kept.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := kept.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a parked keep-alive connection after Drain: %v, want EOF", err)
	}
	if n := parkedConns(e); n != 1 {
		t.Errorf("after Drain %d parked connections, want 1 (the new one keeps its chance of a first answer)", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown with a parked connection: %v", err)
	}
	fresh.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := fresh.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a parked new connection after Shutdown: %v, want EOF", err)
	}
	if got := frontendStats(t, e, "web").CurSessions; got != 0 {
		t.Errorf("after Shutdown scur %d", got)
	}
}
