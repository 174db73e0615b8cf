package proxy

import (
	"fmt"
	"strings"
	"testing"
)

// TestRoundRobinWeights checks smooth weighted round-robin end to end: with
// weights 1:2:3, 600 requests land 100/200/300 (within 2%).
func TestRoundRobinWeights(t *testing.T) {
	a := startBackend(t, "a", nil)
	b := startBackend(t, "b", nil)
	c := startBackend(t, "c", nil)
	_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    balance: roundrobin
    servers:
      - {name: a, address: %q, weight: 1}
      - {name: b, address: %q, weight: 2}
      - {name: c, address: %q, weight: 3}
`, a.addr, b.addr, c.addr))
	cl := newClient(t)
	counts := map[string]int{}
	const n = 600
	for i := range n {
		status, body, err := get(cl, "http://"+addr+"/")
		if err != nil || status != 200 {
			t.Fatalf("request %d: %d %v", i, status, err)
		}
		counts[strings.TrimSpace(body)]++
	}
	for name, want := range map[string]int{"a": 100, "b": 200, "c": 300} {
		if got := counts[name]; got < want-n*2/100 || got > want+n*2/100 {
			t.Errorf("server %s answered %d of %d requests, want %d ±2%% (all: %v)", name, got, n, want, counts)
		}
	}
}

// TestBackupOnlyWhenPrimariesDown checks that a backup server gets no
// traffic while a primary works. (Takeover when primaries are DOWN needs
// health checks: see the health tests.)
func TestBackupOnlyWhenPrimariesDown(t *testing.T) {
	t.Run("primaries up", func(t *testing.T) {
		p := startBackend(t, "primary", nil)
		bk := startBackend(t, "backup", nil)
		_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, retries: 3, redispatch: true, timeouts: {connect: 1s, server: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: p1, address: %q}
      - {name: bk, address: %q, backup: true}
`, p.addr, bk.addr))
		cl := newClient(t)
		for i := range 20 {
			status, body, err := get(cl, "http://"+addr+"/")
			if err != nil || status != 200 || body != "primary\n" {
				t.Fatalf("request %d: %d %q %v (want the primary)", i, status, body, err)
			}
		}
	})
}
