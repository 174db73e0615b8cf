package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
	"golang.org/x/sys/unix"
)

func mustParse(t *testing.T, yaml string) *state.Config {
	t.Helper()
	cfg, err := state.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// TestReloadUnderLoad swaps between two configs 20 times while 8 keep-alive
// clients send requests: no request may fail, and both configs' servers
// must answer.
func TestReloadUnderLoad(t *testing.T) {
	var bes []*testBackend
	for _, n := range []string{"a1", "a2", "b1", "b2", "b3"} {
		bes = append(bes, startBackend(t, n, nil))
	}
	cfgA := fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app, forwardfor: true}
backends:
  - name: app
    servers:
      - {name: a1, address: %q, weight: 1}
      - {name: a2, address: %q, weight: 3}
`, bes[0].addr, bes[1].addr)
	cfgB := fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    balance: static-rr
    servers:
      - {name: b1, address: %q, weight: 2}
      - {name: b2, address: %q, weight: 1}
      - {name: b3, address: %q, weight: 1}
`, bes[2].addr, bes[3].addr, bes[4].addr)
	e, addr := startEngine(t, cfgA)
	configs := []*state.Config{mustParse(t, cfgA), mustParse(t, cfgB)}

	var (
		done     = make(chan struct{})
		wg       sync.WaitGroup
		total    atomic.Int64
		failures atomic.Int64
		mu       sync.Mutex
		answered = map[string]int{}
		firstErr error
	)
	for range 8 {
		cl := newClient(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20000 {
				select {
				case <-done:
					return
				default:
				}
				status, body, err := get(cl, "http://"+addr+"/")
				total.Add(1)
				mu.Lock()
				if err != nil || status != 200 {
					failures.Add(1)
					if firstErr == nil {
						firstErr = fmt.Errorf("status %d body %q err %v", status, body, err)
					}
				} else {
					answered[strings.TrimSpace(body)]++
				}
				mu.Unlock()
			}
		}()
	}
	stop := sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stop)

	for i := range 20 {
		// Let some requests run on the current config before the next swap.
		mark := total.Load()
		waitFor(t, 5*time.Second, "requests between reloads", func() bool { return total.Load() >= mark+40 })
		if err := e.Apply(configs[(i+1)%2]); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
	mark := total.Load()
	waitFor(t, 5*time.Second, "requests after the last reload", func() bool { return total.Load() >= mark+40 })
	stop()

	mu.Lock()
	defer mu.Unlock()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during reloads; first: %v", n, total.Load(), firstErr)
	}
	for _, n := range []string{"a1", "a2", "b1", "b2", "b3"} {
		if answered[n] == 0 {
			t.Errorf("server %s never answered (answers: %v)", n, answered)
		}
	}
	t.Logf("%d requests over 20 reloads: %v", total.Load(), answered)
}

// TestGracefulShutdown: Shutdown closes an idle keep-alive connection,
// lets an in-flight request finish with Connection: close, and refuses new
// connections.
func TestGracefulShutdown(t *testing.T) {
	entered := make(chan struct{}, 1)
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			time.Sleep(300 * time.Millisecond) // the workload: a slow request
		}
		io.WriteString(w, "done\n")
	}))
	e, addr := startEngine(t, oneBackendConfig(be.addr))

	idle := dialProxy(t, addr)
	idleBR := bufio.NewReader(idle)
	io.WriteString(idle, "GET /fast HTTP/1.1\r\nHost: test\r\n\r\n")
	if resp, err := http.ReadResponse(idleBR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("idle connection's first request: %v", err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	busy := dialProxy(t, addr)
	busyBR := bufio.NewReader(busy)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the backend")
	}

	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownErr <- e.Shutdown(ctx)
	}()

	expectClosed(t, idle, idleBR)

	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(busyBR, nil)
	if err != nil {
		t.Fatalf("in-flight request cut by Shutdown: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "done\n" {
		t.Errorf("in-flight request: %d %q, want 200 done", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("in-flight response during shutdown lacks Connection: close (header %q)", resp.Header.Get("Connection"))
	}
	expectClosed(t, busy, busyBR)

	select {
	case err := <-shutdownErr:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after Shutdown")
	}
}

// TestHardStop: a request outlasting the Shutdown context has its
// connection closed, and Shutdown reports the hard stop.
func TestHardStop(t *testing.T) {
	g := newGate(t)
	be := startBackend(t, "app", g.handler("app"))
	e, addr := startEngine(t, oneBackendConfig(be.addr))
	c := dialProxy(t, addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /forever HTTP/1.1\r\nHost: test\r\n\r\n")
	g.waitEntered(t, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := e.Shutdown(ctx)
	if err == nil {
		t.Errorf("Shutdown returned nil with a request still in flight, want a hard-stop error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v with a 200ms context", d)
	}
	expectClosed(t, c, br)
}

// TestTCPModeHalfClose: a TCP-mode frontend copies both ways and carries a
// half-close through: the client writes, shuts its write side, and reads
// the whole echo followed by EOF.
func TestTCPModeHalfClose(t *testing.T) {
	e, addr := tunnelEngine(t, "5s", func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
	data := payload(1<<20, 3)
	c := dialProxy(t, addr)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the echo: %v (after %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if len(got) != len(data) || sha(got) != sha(data) {
		t.Fatalf("echo: %d bytes, want %d intact", len(got), len(data))
	}
	waitFor(t, 2*time.Second, "tcp counters", func() bool {
		f := frontendStats(t, e, "tcpfe")
		return f.BytesIn == int64(len(data)) && f.BytesOut == int64(len(data)) && f.CurSessions == 0
	})
}

// TestForwardedHeaders: X-Forwarded-For is appended, Forwarded added, and
// hop-by-hop fields never reach the server.
func TestForwardedHeaders(t *testing.T) {
	hdrs := make(chan http.Header, 1)
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
		io.WriteString(w, "ok")
	}))
	_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app, forwardfor: true, forwarded: true}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, be.addr))
	c := dialProxy(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\nConnection: foo, keep-alive\r\nFoo: bar\r\n"+
		"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Keep: yes\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	var h http.Header
	select {
	case h = <-hdrs:
	case <-time.After(5 * time.Second):
		t.Fatal("backend never got the request")
	}
	if got := strings.Join(h.Values("X-Forwarded-For"), ", "); got != "10.0.0.1, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want \"10.0.0.1, 127.0.0.1\"", got)
	}
	if got := h.Values("Forwarded"); len(got) != 1 || got[0] != "for=127.0.0.1;proto=http" {
		t.Errorf("Forwarded %q, want for=127.0.0.1;proto=http", got)
	}
	for _, name := range []string{"Foo", "Keep-Alive", "Proxy-Connection", "Te"} {
		if v, ok := h[name]; ok {
			t.Errorf("hop-by-hop %s: %q reached the backend", name, v)
		}
	}
	if v := h.Get("Connection"); strings.Contains(strings.ToLower(v), "foo") {
		t.Errorf("Connection: %q reached the backend", v)
	}
	if h.Get("X-Keep") != "yes" {
		t.Errorf("end-to-end header X-Keep lost")
	}
}

// TestCounters: after N requests on N connections, the frontend counts N
// sessions, N 2xx and exactly the bytes exchanged; the server counts N.
func TestCounters(t *testing.T) {
	be := startBackend(t, "app", nil)
	e, addr := startEngine(t, oneBackendConfig(be.addr))
	const n = 7
	req := "GET /count HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
	var in, out int64
	for i := range n {
		c := dialProxy(t, addr)
		io.WriteString(c, req)
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") || !strings.HasSuffix(string(b), "\r\n\r\napp\n") {
			t.Fatalf("request %d: response %q", i, b)
		}
		in += int64(len(req))
		out += int64(len(b))
		c.Close()
	}
	waitFor(t, 2*time.Second, "frontend scur 0", func() bool { return frontendStats(t, e, "web").CurSessions == 0 })
	f := frontendStats(t, e, "web")
	if f.TotalSessions != n || f.Resp2xx != n || f.BytesIn != in || f.BytesOut != out || f.Resp5xx != 0 || f.ReqErrors != 0 {
		t.Errorf("frontend stot=%d hrsp_2xx=%d bin=%d bout=%d hrsp_5xx=%d ereq=%d; want %d %d %d %d 0 0",
			f.TotalSessions, f.Resp2xx, f.BytesIn, f.BytesOut, f.Resp5xx, f.ReqErrors, n, n, in, out)
	}
	if f.MaxSessions != 1 {
		t.Errorf("frontend smax=%d, want 1 (sequential connections)", f.MaxSessions)
	}
	b := backendStats(t, e, "app")
	if b.TotalSessions != n || b.Resp2xx != n || b.BytesOut != out {
		t.Errorf("backend stot=%d hrsp_2xx=%d bout=%d; want %d %d %d", b.TotalSessions, b.Resp2xx, b.BytesOut, n, n, out)
	}
	s := serverStats(t, e, "app", "s1")
	if s.TotalSessions != n || s.Resp2xx != n || s.CurSessions != 0 {
		t.Errorf("server stot=%d hrsp_2xx=%d scur=%d; want %d %d 0", s.TotalSessions, s.Resp2xx, s.CurSessions, n, n)
	}
}

// TestReloadGlobalMaxconn: a reload that changes global.maxconn must not
// break the accounting of connections accepted before it: they close
// normally and Shutdown then finds nothing in flight.
func TestReloadGlobalMaxconn(t *testing.T) {
	be := startBackend(t, "app", nil)
	cfg := func(maxconn int) string {
		return fmt.Sprintf(`
global: {maxconn: %d}
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, maxconn, be.addr)
	}
	e, addr := startEngine(t, cfg(100))
	c := dialProxy(t, addr)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)

	if err := e.Apply(mustParse(t, cfg(200))); err != nil {
		t.Fatal(err)
	}
	// A connection accepted after the reload works too.
	c2 := dialProxy(t, addr)
	br2 := bufio.NewReader(c2)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	resp, err = http.ReadResponse(br2, nil)
	if err != nil {
		t.Fatalf("request after reload: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	c.Close()
	c2.Close()
	waitFor(t, 2*time.Second, "frontend scur 0", func() bool {
		return frontendStats(t, e, "web").CurSessions == 0
	})
	// Shutdown runs in a goroutine so that a stuck engine fails the test
	// instead of hanging the suite.
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		errc <- e.Shutdown(ctx)
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Shutdown with no request in flight: %v (a connection goroutine is stuck)", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Shutdown did not return 3s after its context expired: connection goroutines are stuck")
	}
}

// TestRequestHeadTimeout: a client that sends part of a head and stops
// gets 408 after timeout http_request.
func TestRequestHeadTimeout(t *testing.T) {
	be := startBackend(t, "app", nil)
	e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s, http_request: 300ms}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, be.addr))
	c := dialProxy(t, addr)
	start := time.Now()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: te")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no response to a stalled head: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 408 {
		t.Errorf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("408 after %v, want about 300ms", d)
	}
	expectClosed(t, c, br)
	if f := frontendStats(t, e, "web"); f.Resp4xx != 1 || f.ReqErrors != 1 {
		t.Errorf("frontend hrsp_4xx=%d ereq=%d, want 1 1", f.Resp4xx, f.ReqErrors)
	}
}

// TestTCPModeFINWithLastBytes: a FIN that arrives in the same segment as
// the last bytes (both sides cork, so data and FIN leave as one segment)
// still ends each direction of the tunnel at once. The copy waits without
// reading again after a short read; only the parker's hang-up watch can
// tell it about such a FIN, so without it this test times out.
func TestTCPModeFINWithLastBytes(t *testing.T) {
	cork := func(c net.Conn) {
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) })
		}
		if err != nil {
			t.Errorf("TCP_CORK: %v", err)
		}
	}
	_, addr := tunnelEngine(t, "30s", func(c net.Conn) {
		got, err := io.ReadAll(c)
		if err != nil {
			return
		}
		cork(c)
		c.Write(got)
		c.(*net.TCPConn).CloseWrite()
	})
	for i := range 50 {
		c := dialProxy(t, addr)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := payload(100+i, uint64(i))
		cork(c)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("connection %d: %v after %d bytes (the tunnel missed a FIN)", i, err, len(got))
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("connection %d: echo of %d bytes, want %d intact", i, len(got), len(msg))
		}
	}
}
