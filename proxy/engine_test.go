package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// testBackend is a real HTTP server on loopback that answers its name and
// counts the TCP connections it accepted.
type testBackend struct {
	name  string
	addr  string
	conns atomic.Int64
	srv   *http.Server
}

func startBackend(t *testing.T, name string, h http.Handler) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{name: name, addr: ln.Addr().String()}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s\n", name)
		})
	}
	b.srv = &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// startEngine applies the YAML config and returns the engine and the
// address of its first listener (configs bind 127.0.0.1:0).
func startEngine(t testing.TB, yaml string) (*Engine, string) {
	t.Helper()
	cfg, err := state.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := e.Apply(cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	for _, a := range e.Addrs() {
		return e, a.String()
	}
	return e, ""
}

func oneBackendConfig(addrs ...string) string {
	var b strings.Builder
	b.WriteString(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s, queue: 1s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app, forwardfor: true}
backends:
  - name: app
    servers:
`)
	for i, a := range addrs {
		fmt.Fprintf(&b, "      - {name: s%d, address: %q}\n", i+1, a)
	}
	return b.String()
}

func TestProxyKeepAliveAndReuse(t *testing.T) {
	b1 := startBackend(t, "one", nil)
	_, addr := startEngine(t, oneBackendConfig(b1.addr))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 50 {
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: test\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "one\n" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := b1.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 50 sequential requests, want 1 (reuse)", n)
	}
}
