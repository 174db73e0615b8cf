package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// tunnelEngine starts a TCP-mode engine (frontend tcpfe) with the given
// tunnel timeout in front of handle's server.
func tunnelEngine(t *testing.T, tunnel string, handle func(c net.Conn)) (*Engine, string) {
	t.Helper()
	srv := startRawServer(t, handle)
	return startEngine(t, fmt.Sprintf(`
defaults: {mode: tcp, timeouts: {connect: 1s, client: 30s, server: 30s, tunnel: %s}}
frontends:
  - {name: tcpfe, bind: ["127.0.0.1:0"], default_backend: be}
backends:
  - {name: be, servers: [{name: s1, address: %q}]}
`, tunnel, srv.addr))
}

// TestTunnelOneWayStreamStaysOpen: the tunnel timeout is inactivity in
// both directions (HAProxy's `timeout tunnel`): a server that streams to a
// silent client for three times the timeout is not cut off.
func TestTunnelOneWayStreamStaysOpen(t *testing.T) {
	const ticks = 30 // one byte every 100 ms for 3 s
	_, addr := tunnelEngine(t, "1s", func(c net.Conn) {
		for i := range ticks {
			if _, err := c.Write([]byte{byte('a' + i)}); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the stream's pace, not synchronisation
		}
		c.Close()
	})
	c := dialProxy(t, addr)
	got, err := io.ReadAll(c)
	if err != nil || len(got) != ticks {
		t.Fatalf("read %q, %v: want %d bytes and EOF (the silent client's side timed the tunnel out)", got, err, ticks)
	}
}

// TestTunnelIdleTimeout: a tunnel idle in both directions is closed after
// its timeout, not before.
func TestTunnelIdleTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, addr := tunnelEngine(t, "300ms", func(c net.Conn) { io.Copy(c, c) })
	c := dialProxy(t, addr)
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	idleFrom := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	idle := time.Since(idleFrom)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("after the echo: %d bytes, %v; want the proxy to close the idle tunnel", n, err)
	}
	// The client saw the echo after the proxy forwarded it, so it
	// measures a little less idle time than the proxy did.
	if idle < timeout-50*time.Millisecond {
		t.Fatalf("closed after %v of idleness, before the %v timeout", idle, timeout)
	}
}

// TestTunnelBlockedWriterTimesOut: a client that stops reading while the
// server keeps sending blocks the copy's writes; the tunnel ends after the
// timeout without progress, and the server sees its connection go.
func TestTunnelBlockedWriterTimesOut(t *testing.T) {
	serverErr := make(chan error, 1)
	_, addr := tunnelEngine(t, "300ms", func(c net.Conn) {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		chunk := make([]byte, 64<<10)
		for {
			if _, err := c.Write(chunk); err != nil {
				serverErr <- err
				return
			}
		}
	})
	c := dialProxy(t, addr) // never read
	defer c.Close()
	select {
	case err := <-serverErr:
		if isTimeout(err) {
			t.Fatalf("the server's write timed out after 10s: the proxy never gave up on the blocked client (%v)", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server's writes neither failed nor timed out")
	}
}
