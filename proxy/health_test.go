package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// fakeHealth is a Health whose verdicts the test sets, and which records
// what the engine observed. (The real Monitor is tested in package health
// and end to end in test/.)
type fakeHealth struct {
	mu       sync.Mutex
	down     map[string]bool
	weight   map[string]int
	l4Errors map[string]int
	l7       map[string][]int
}

func newFakeHealth() *fakeHealth {
	return &fakeHealth{down: map[string]bool{}, weight: map[string]int{}, l4Errors: map[string]int{}, l7: map[string][]int{}}
}

func (f *fakeHealth) setDown(key string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[key] = down
}

func (f *fakeHealth) Usable(b, s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down[b+"/"+s]
}

func (f *fakeHealth) Weight(b, s string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if w, ok := f.weight[b+"/"+s]; ok {
		return w
	}
	return 1
}

func (f *fakeHealth) ObserveL4(b, s string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !ok {
		f.l4Errors[b+"/"+s]++
	}
}

func (f *fakeHealth) ObserveL7(b, s string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.l7[b+"/"+s] = append(f.l7[b+"/"+s], status)
}

func startEngineWithHealth(t *testing.T, h Health, yaml string) (*Engine, string) {
	t.Helper()
	cfg, err := state.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	e := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.SetHealth(h)
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

// TestBackupTakesOverWhenPrimariesDown: no traffic reaches a DOWN server;
// backups serve only when every primary is DOWN; 503 when none is left.
func TestBackupTakesOverWhenPrimariesDown(t *testing.T) {
	p1, p2 := startBackend(t, "p1", nil), startBackend(t, "p2", nil)
	bk := startBackend(t, "bk", nil)
	h := newFakeHealth()
	_, addr := startEngineWithHealth(t, h, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends: [{name: web, bind: ["127.0.0.1:0"], default_backend: app}]
backends:
  - name: app
    servers:
      - {name: p1, address: %q}
      - {name: p2, address: %q}
      - {name: bk, address: %q, backup: true}
`, p1.addr, p2.addr, bk.addr))
	cl := newClient(t)
	count := func(n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			status, body, err := get(cl, "http://"+addr+"/")
			if err != nil {
				t.Fatal(err)
			}
			if status != 200 {
				seen[fmt.Sprint(status)]++
				continue
			}
			seen[body]++
		}
		return seen
	}
	if got := count(20); got["p1\n"] != 10 || got["p2\n"] != 10 {
		t.Errorf("both primaries up: %v, want p1 and p2 10 each, no backup", got)
	}
	h.setDown("app/p1", true)
	if got := count(10); got["p2\n"] != 10 {
		t.Errorf("p1 down: %v, want all 10 on p2", got)
	}
	h.setDown("app/p2", true)
	if got := count(10); got["bk\n"] != 10 {
		t.Errorf("every primary down: %v, want all 10 on the backup", got)
	}
	h.setDown("app/bk", true)
	if got := count(5); got["503"] != 5 {
		t.Errorf("no server left: %v, want 5 × 503", got)
	}
	h.setDown("app/p1", false)
	if got := count(5); got["p1\n"] != 5 {
		t.Errorf("p1 back: %v, want all on p1", got)
	}
}

// TestPassiveObservation: failed connects and 5xx (from the server, or
// produced because of it) reach Health; 2xx cost nothing.
func TestPassiveObservation(t *testing.T) {
	bad := startBackend(t, "bad", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
	}))
	dead := refusingAddr(t)
	h := newFakeHealth()
	_, addr := startEngineWithHealth(t, h, fmt.Sprintf(`
defaults: {mode: http, retries: 0, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    balance: first
    servers:
      - {name: bad, address: %q}
      - {name: dead, address: %q}
`, bad.addr, dead))
	cl := newClient(t)
	for range 3 {
		if status, _, err := get(cl, "http://"+addr+"/"); err != nil || status != 500 {
			t.Fatalf("got %d %v, want the server's 500", status, err)
		}
	}
	h.setDown("app/bad", true)
	for range 2 {
		if status, _, err := get(cl, "http://"+addr+"/"); err != nil || status != 503 {
			t.Fatalf("got %d %v, want 503 from the refused connect", status, err)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if got := h.l7["app/bad"]; len(got) != 3 || got[0] != 500 {
		t.Errorf("layer-7 observations of bad: %v, want three 500s", got)
	}
	if got := h.l4Errors["app/dead"]; got != 2 {
		t.Errorf("layer-4 errors of dead: %d, want 2", got)
	}
}

// TestShutdownSessionsCutsInFlight: with on_marked_down shutdown-sessions,
// ShutdownSessions cuts a request in flight on that server.
func TestShutdownSessionsCutsInFlight(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := startBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	t.Cleanup(func() { close(release) })
	h := newFakeHealth()
	e, addr := startEngineWithHealth(t, h, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 10s}}
frontends: [{name: web, bind: ["127.0.0.1:0"], default_backend: app}]
backends:
  - name: app
    health_check: {type: tcp, on_marked_down: shutdown-sessions}
    servers: [{name: s, address: %q, check: true}]
`, slow.addr))
	type result struct {
		status int
		err    error
	}
	res := make(chan result, 1)
	go func() {
		status, _, err := get(newClient(t), "http://"+addr+"/")
		res <- result{status, err}
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("request never reached the server")
	}
	if n := e.ShutdownSessions("app", "s"); n != 1 {
		t.Errorf("ShutdownSessions closed %d connections, want 1", n)
	}
	select {
	case r := <-res:
		if r.err == nil && r.status != 502 {
			t.Errorf("cut request: status %d, want 502 or a broken connection", r.status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight request was not cut")
	}
}
