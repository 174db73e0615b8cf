package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestRetryRedispatch: with redispatch, a request whose server refuses is
// moved to the live one, and the backend counts retries and redispatches.
func TestRetryRedispatch(t *testing.T) {
	live := startBackend(t, "live", nil)
	e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, retries: 3, redispatch: true, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: dead, address: %q}
      - {name: live, address: %q}
`, refusingAddr(t), live.addr))
	cl := newClient(t)
	for i := range 20 {
		status, body, err := get(cl, "http://"+addr+"/")
		if err != nil || status != 200 || body != "live\n" {
			t.Fatalf("request %d: %d %q %v", i, status, body, err)
		}
	}
	eventually(t, 2*time.Second, func() string {
		bs := backendStats(t, e, "app")
		if bs.Retries == 0 || bs.Redispatches == 0 || bs.ConnErrors == 0 || bs.Resp2xx != 20 || bs.Resp5xx != 0 {
			return fmt.Sprintf("backend wretr=%d wredis=%d econ=%d hrsp_2xx=%d hrsp_5xx=%d, want the first three > 0, 20 and 0",
				bs.Retries, bs.Redispatches, bs.ConnErrors, bs.Resp2xx, bs.Resp5xx)
		}
		return ""
	})
}

// TestRetryWithoutRedispatch: without redispatch a refused connect is
// retried on the same server only: retries+1 attempts, then 503.
func TestRetryWithoutRedispatch(t *testing.T) {
	t.Run("single refusing server", func(t *testing.T) {
		e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, retries: 2, redispatch: false, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: dead, address: %q}]}
`, refusingAddr(t)))
		status, _, err := get(newClient(t), "http://"+addr+"/")
		if err != nil || status != 503 {
			t.Fatalf("got %d %v, want 503", status, err)
		}
		eventually(t, 2*time.Second, func() string {
			bs := backendStats(t, e, "app")
			if bs.ConnErrors != 3 || bs.Retries != 2 || bs.Redispatches != 0 || bs.Resp5xx != 1 {
				return fmt.Sprintf("backend econ=%d wretr=%d wredis=%d hrsp_5xx=%d, want econ=3 (retries+1) wretr=2 wredis=0 hrsp_5xx=1",
					bs.ConnErrors, bs.Retries, bs.Redispatches, bs.Resp5xx)
			}
			return ""
		})
	})
	t.Run("refusing and live server", func(t *testing.T) {
		// Round-robin sends the first request to "dead". Without redispatch
		// its retries must stay on "dead" (HAProxy: retries go to the same
		// server; only `option redispatch` moves the request).
		live := startBackend(t, "live", nil)
		e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, retries: 2, redispatch: false, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: dead, address: %q}
      - {name: live, address: %q}
`, refusingAddr(t), live.addr))
		cl := newClient(t)
		failed := 0
		for range 10 {
			status, _, err := get(cl, "http://"+addr+"/")
			if err != nil {
				t.Fatal(err)
			}
			if status == 503 {
				failed++
			}
		}
		ds := serverStats(t, e, "app", "dead")
		if failed == 0 || ds.ConnErrors != int64(3*failed) {
			t.Errorf("%d of 10 requests failed and dead has econ=%d; want some 503s, each after retries+1=3 connects to dead (no redispatch); live stot=%d",
				failed, ds.ConnErrors, serverStats(t, e, "app", "live").TotalSessions)
		}
	})
}

// TestServerMaxconnQueue: with server maxconn 1, a second concurrent request
// waits in the queue (qcur 1) and is served once the first completes; with
// timeout queue 200ms it gets 503 instead.
func TestServerMaxconnQueue(t *testing.T) {
	for _, expire := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue timeout=%v", expire), func(t *testing.T) {
			g := newGate(t)
			be := startBackend(t, "app", g.handler("app"))
			queue := "5s"
			if expire {
				queue = "200ms"
			}
			e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 10s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    timeouts: {queue: %s}
    servers:
      - {name: s1, address: %q, maxconn: 1}
`, queue, be.addr))
			cl := newClient(t)
			type result struct {
				status int
				err    error
				at     time.Time
			}
			first, second := make(chan result, 1), make(chan result, 1)
			go func() {
				s, _, err := get(cl, "http://"+addr+"/1")
				first <- result{s, err, time.Now()}
			}()
			g.waitEntered(t, 1)
			start := time.Now()
			go func() {
				s, _, err := get(cl, "http://"+addr+"/2")
				second <- result{s, err, time.Now()}
			}()
			waitFor(t, 3*time.Second, "qcur 1 on the server", func() bool {
				return serverStats(t, e, "app", "s1").QueueCur == 1
			})
			if expire {
				var r result
				select {
				case r = <-second:
				case <-time.After(5 * time.Second):
					t.Fatal("queued request never answered")
				}
				if r.err != nil || r.status != 503 {
					t.Errorf("queued request: %d %v, want 503 after timeout queue", r.status, r.err)
				}
				if d := r.at.Sub(start); d < 150*time.Millisecond {
					t.Errorf("503 after %v, want about 200ms (timeout queue)", d)
				}
				g.open()
				if r := <-first; r.err != nil || r.status != 200 {
					t.Errorf("first request: %d %v", r.status, r.err)
				}
				return
			}
			select {
			case r := <-second:
				t.Fatalf("second request answered (%d %v) while the first holds the only slot", r.status, r.err)
			default:
			}
			g.open()
			for i, ch := range []chan result{first, second} {
				select {
				case r := <-ch:
					if r.err != nil || r.status != 200 {
						t.Errorf("request %d: %d %v, want 200", i+1, r.status, r.err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("request %d never answered", i+1)
				}
			}
			eventually(t, 2*time.Second, func() string {
				ss := serverStats(t, e, "app", "s1")
				if ss.QueueCur != 0 || ss.QueueMax != 1 || ss.MaxSessions != 1 || ss.Resp2xx != 2 {
					return fmt.Sprintf("server qcur=%d qmax=%d smax=%d hrsp_2xx=%d, want 0 1 1 2", ss.QueueCur, ss.QueueMax, ss.MaxSessions, ss.Resp2xx)
				}
				return ""
			})
		})
	}
}

// TestFrontendMaxconn: with frontend maxconn 2, a third client connects
// (kernel backlog) but is not served until one of the first two leaves.
func TestFrontendMaxconn(t *testing.T) {
	be := startBackend(t, "app", nil)
	_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app, maxconn: 2}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, be.addr))
	roundTrip := func(c net.Conn, br *bufio.Reader) error {
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var held []net.Conn
	for i := range 2 {
		c := dialProxy(t, addr)
		if err := roundTrip(c, bufio.NewReader(c)); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		held = append(held, c)
	}
	c3 := dialProxy(t, addr) // accepted by the kernel, not by the proxy
	io.WriteString(c3, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	c3.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	n, err := c3.Read(b[:])
	var ne net.Error
	if n != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("third connection got %d bytes (%v) while maxconn 2 is reached, want nothing", n, err)
	}
	held[0].Close()
	c3.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c3), nil)
	if err != nil {
		t.Fatalf("third connection not served after one of the first two closed: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Errorf("third connection: status %d", resp.StatusCode)
	}
}
