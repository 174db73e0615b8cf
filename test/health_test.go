package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/ports"
)

// The health tests run the agent binary against backends in the test
// process that count what they serve and answer as told: 500, slowly, or
// not at all. Checks run every 100 ms or so; every wait is bounded.

// hserver is a backend under the test's control. It counts live requests
// and /healthz checks separately.
type hserver struct {
	name string
	addr string

	live   atomic.Int64 // requests other than /healthz
	checks atomic.Int64 // /healthz requests answered

	liveStatus  atomic.Int32 // status of live requests; 200 by default
	checkStatus atomic.Int32 // status of /healthz; 200 by default
	checkDelay  atomic.Int64 // a slow /healthz, in ns

	mu       sync.Mutex
	srv      *http.Server // nil while refusing connections
	reserved int          // the socket holding the port while refusing, or -1
	// script, when not empty, gives the status of the next checks, one
	// each; observe runs as each scripted check arrives, before it is
	// answered: the monitor has recorded every earlier check by then.
	script  []int
	observe func()
	pending int // scripted checks not yet observed
}

func startServer(t *testing.T, name string) *hserver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hserver{name: name, addr: ln.Addr().String(), reserved: -1}
	h.liveStatus.Store(200)
	h.checkStatus.Store(200)
	h.serveOn(ln)
	t.Cleanup(func() {
		h.mu.Lock()
		srv, fd := h.srv, h.reserved
		h.mu.Unlock()
		if srv != nil {
			srv.Close()
		}
		if fd >= 0 {
			syscall.Close(fd)
		}
	})
	return h
}

func (h *hserver) serveOn(ln net.Listener) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	h.mu.Lock()
	h.srv = srv
	h.mu.Unlock()
	go srv.Serve(ln)
}

// refuse closes the listener and every connection, and keeps the port
// bound without listening: connects are refused, and no other test can
// take the port meanwhile.
func (h *hserver) refuse(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return
	}
	h.srv.Close()
	h.srv = nil
	ap, err := netip.ParseAddrPort(h.addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		syscall.Close(fd)
		t.Fatalf("keep %s bound: %v", h.addr, err)
	}
	h.reserved = fd
}

// serve listens again on the server's address.
func (h *hserver) serve(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	if h.reserved >= 0 {
		syscall.Close(h.reserved)
		h.reserved = -1
	}
	h.mu.Unlock()
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	h.serveOn(ln)
}

// runScript makes the next len(statuses) checks answer statuses in turn,
// calling observe as each arrives.
func (h *hserver) runScript(statuses []int, observe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.script, h.observe, h.pending = statuses, observe, len(statuses)
}

// scriptLeft is the number of scripted checks not yet observed.
func (h *hserver) scriptLeft() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pending
}

func (h *hserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/healthz" {
		h.live.Add(1)
		w.WriteHeader(int(h.liveStatus.Load()))
		io.WriteString(w, h.name+"\n")
		return
	}
	status := int(h.checkStatus.Load())
	h.mu.Lock()
	var observe func()
	if len(h.script) > 0 {
		status, observe = h.script[0], h.observe
		h.script = h.script[1:]
	}
	h.mu.Unlock()
	if observe != nil {
		observe()
		h.mu.Lock()
		h.pending--
		h.mu.Unlock()
	}
	if d := time.Duration(h.checkDelay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	h.checks.Add(1)
	w.WriteHeader(status)
	io.WriteString(w, "ok")
}

// hnode is an agent under test with its admin API client.
type hnode struct {
	bin, dir, lbPath, nodePath, sock, frontend string
	agent                                      *proc
	admin, web                                 *http.Client
}

// newHealthNode prepares a node; the caller writes its proxy config with
// the node's frontend address, then calls run.
func newHealthNode(t *testing.T) *hnode {
	t.Helper()
	dir, err := os.MkdirTemp("", "fulcrum-h") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &hnode{bin: binary(t), dir: dir, frontend: ports.Addr(t),
		lbPath: filepath.Join(dir, "lb.yaml"), nodePath: filepath.Join(dir, "node.yaml"), sock: filepath.Join(dir, "admin.sock")}
	n.admin = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", n.sock)
		},
	}}
	n.web = &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(n.admin.CloseIdleConnections)
	t.Cleanup(n.web.CloseIdleConnections)
	return n
}

func (n *hnode) run(t *testing.T, lb string) {
	t.Helper()
	writeFile(t, n.lbPath, lb)
	writeFile(t, n.nodePath, fmt.Sprintf("node: {name: health-e2e, data_dir: %s}\nadmin: {socket: %s}\nproxy_config: %s\n",
		n.dir, n.sock, n.lbPath))
	n.agent = start(t, nil, n.bin, "agent", "--config", n.nodePath)
	waitFor(t, 10*time.Second, "the agent to serve "+n.frontend, func() bool { return dialOK(n.frontend) })
}

// reload rewrites the proxy config and sends SIGHUP.
func (n *hnode) reload(t *testing.T, lb string) {
	t.Helper()
	writeFile(t, n.lbPath, lb)
	if err := n.agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// cli runs a fulcrum command against the node.
func (n *hnode) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(n.bin, append(args, "--config", n.nodePath)...).CombinedOutput()
	return string(out), err
}

// srvState is what the tests read of GET /v1/servers.
type srvState struct {
	Backend     string `json:"backend"`
	Server      string `json:"server"`
	State       string `json:"state"`
	Admin       string `json:"admin"`
	LocalUp     bool   `json:"local_up"`
	Health      int    `json:"health"`
	Rise        int    `json:"rise"`
	Fall        int    `json:"fall"`
	Weight      int    `json:"weight"`
	AgentWeight int    `json:"agent_weight"`
	AgentAdmin  string `json:"agent_admin"`
	ChkFail     uint64 `json:"chkfail"`
	ChkDown     uint64 `json:"chkdown"`
	LastChange  string `json:"last_change"`
	Last        struct {
		Status string `json:"status"`
		Code   int    `json:"code"`
	} `json:"last"`
}

func (s srvState) String() string {
	return fmt.Sprintf("%s/%s %s health %d/%d+%d weight %d chkfail %d chkdown %d last %s/%d",
		s.Backend, s.Server, s.State, s.Health, s.Rise, s.Fall, s.Weight, s.ChkFail, s.ChkDown, s.Last.Status, s.Last.Code)
}

// getJSON calls GET path on the admin API.
func (n *hnode) getJSON(path string, out any) error {
	resp, err := n.admin.Get("http://fulcrum" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, out)
}

// servers returns every server's health by "backend/server".
func (n *hnode) servers() (map[string]srvState, error) {
	var list []srvState
	if err := n.getJSON("/v1/servers", &list); err != nil {
		return nil, err
	}
	m := make(map[string]srvState, len(list))
	for _, s := range list {
		m[s.Backend+"/"+s.Server] = s
	}
	return m, nil
}

func (n *hnode) server(t *testing.T, name string) srvState {
	t.Helper()
	m, err := n.servers()
	if err != nil {
		t.Fatal(err)
	}
	s, ok := m[name]
	if !ok {
		t.Fatalf("no server %s in %v", name, m)
	}
	return s
}

// waitServer polls the server's health until cond holds, up to d.
func (n *hnode) waitServer(t *testing.T, d time.Duration, name, what string, cond func(srvState) bool) srvState {
	t.Helper()
	var last srvState
	deadline := time.Now().Add(d)
	for {
		m, err := n.servers()
		if err != nil {
			t.Fatal(err)
		}
		last = m[name]
		if cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s %s; last: %v\nagent log:\n%s", d, name, what, last, n.agent.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *hnode) waitState(t *testing.T, name, state string) srvState {
	t.Helper()
	return n.waitServer(t, 10*time.Second, name, "to be "+state, func(s srvState) bool { return s.State == state })
}

// send makes count requests one after the other and counts the statuses.
func (n *hnode) send(t *testing.T, count int) map[int]int {
	t.Helper()
	statuses := map[int]int{}
	for range count {
		status, _, err := get(n.web, "http://"+n.frontend+"/")
		if err != nil {
			t.Fatalf("GET through the proxy: %v", err)
		}
		statuses[status]++
	}
	return statuses
}

// liveCounts returns each server's live request count.
func liveCounts(servers ...*hserver) []int64 {
	out := make([]int64, len(servers))
	for i, s := range servers {
		out[i] = s.live.Load()
	}
	return out
}

// sendCounting sends count requests, all expected to succeed, and returns
// how many each server served.
func (n *hnode) sendCounting(t *testing.T, count int, servers ...*hserver) []int64 {
	t.Helper()
	before := liveCounts(servers...)
	if st := n.send(t, count); st[200] != count {
		t.Fatalf("%d requests: statuses %v, want all 200", count, st)
	}
	after := liveCounts(servers...)
	for i := range after {
		after[i] -= before[i]
	}
	return after
}

// near reports whether got is within tol of want: the balancing
// algorithm's own tests check exact sequences; these check the split.
func near(got, want, tol int64) bool { return got >= want-tol && got <= want+tol }

// statsServer is what the tests read of a server in GET /v1/stats (what
// `fulcrum stats --json` prints).
type statsServer struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Weight int    `json:"weight"`
}

func (n *hnode) statsWeight(t *testing.T, backend, server string) int {
	t.Helper()
	var st struct {
		Backends []struct {
			Name    string        `json:"name"`
			Servers []statsServer `json:"servers"`
		} `json:"backends"`
	}
	if err := n.getJSON("/v1/stats", &st); err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Backends {
		for _, s := range b.Servers {
			if b.Name == backend && s.Name == server {
				return s.Weight
			}
		}
	}
	t.Fatalf("no server %s/%s in stats", backend, server)
	return 0
}

// statsRow returns the cells of a server's row in `fulcrum stats`.
func (n *hnode) statsRow(t *testing.T, backend, server string) string {
	t.Helper()
	out, err := n.cli(t, "stats")
	if err != nil {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[0] == backend && f[1] == server {
			return line
		}
	}
	t.Fatalf("no row %s %s in stats:\n%s", backend, server, out)
	return ""
}

// statsCells splits a stats row on its column gaps (two spaces or more).
func statsCells(row string) []string {
	var cells []string
	for _, c := range strings.Split(row, "  ") {
		if c = strings.TrimSpace(c); c != "" {
			cells = append(cells, c)
		}
	}
	return cells
}

// TestHealthFallRise: a server goes DOWN after exactly `fall` failed
// checks from full health, comes back UP after exactly `rise` passed
// ones, and does not flap when it fails one check in three. Each check is
// scripted at the server, which reads the monitor's state as each check
// arrives: every earlier check has been recorded by then.
func TestHealthFallRise(t *testing.T) {
	t.Parallel()
	s1, s2 := startServer(t, "app1"), startServer(t, "app2")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 200ms, timeout: 200ms, rise: 2, fall: 3}
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
`, n.frontend, s1.addr, s2.addr))

	// A new server starts DOWN and needs rise checks; then full health
	// (rise+fall-1) before fall failures can take it down.
	base := n.waitServer(t, 10*time.Second, "app/app1", "at full health", func(s srvState) bool {
		return s.State == "UP" && s.Health == s.Rise+s.Fall-1
	})
	if base.Rise != 2 || base.Fall != 3 || base.ChkDown != 0 {
		t.Fatalf("before the script: %v", base)
	}

	var mu sync.Mutex
	var seen []srvState
	var observeErr error
	observe := func() {
		s, err := n.servers()
		mu.Lock()
		defer mu.Unlock()
		if err != nil && observeErr == nil {
			observeErr = err
		}
		seen = append(seen, s["app/app1"])
	}
	const (
		ok   = 200
		fail = 500
	)
	script := []int{
		fail, fail, fail, // DOWN after the third
		ok, ok, // UP after the second
		ok, ok, // back to full health
		fail, ok, ok, fail, ok, ok, fail, ok, ok, // one in three fails: no flap
		ok, // only observes the state after the last
	}
	s1.runScript(script, observe)
	waitFor(t, 20*time.Second, "the scripted checks", func() bool { return s1.scriptLeft() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if observeErr != nil {
		t.Fatal(observeErr)
	}
	// seen[i] is the state after the first i scripted checks.
	want := []struct {
		state   string
		chkfail uint64
	}{
		{"UP", 0}, {"UP", 1}, {"UP", 2}, {"DOWN", 3},
		{"DOWN", 3}, {"UP", 3},
		{"UP", 3}, {"UP", 3},
		{"UP", 4}, {"UP", 4}, {"UP", 4}, {"UP", 5}, {"UP", 5}, {"UP", 5}, {"UP", 6}, {"UP", 6}, {"UP", 6},
	}
	for i, w := range want {
		got := seen[i]
		if got.State != w.state || got.ChkFail-base.ChkFail != w.chkfail {
			t.Errorf("after %d scripted checks %v: %v, want %s with %d more failed checks", i, script[:i], got, w.state, w.chkfail)
		}
	}
	if last := seen[len(seen)-1]; last.ChkDown != 1 || last.Health != last.Rise+last.Fall-1 {
		t.Errorf("after the flapping checks: %v, want 1 DOWN transition and full health", last)
	}
	if log := n.agent.stderr.String(); strings.Count(log, "server app/app1 is DOWN") != 1 ||
		!strings.Contains(log, "server app/app1 is DOWN, reason: Layer7 wrong status, code: 500") ||
		strings.Count(log, "server app/app1 is UP") != 2 {
		t.Errorf("want two UP and one DOWN transition logged for app1; log:\n%s", log)
	}
}

// TestNoTrafficToDownServers: servers failing their checks (500, too
// slow) take no requests; the stats show why.
func TestNoTrafficToDownServers(t *testing.T) {
	t.Parallel()
	s1, s2, s3 := startServer(t, "app1"), startServer(t, "app2"), startServer(t, "app3")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
      - {name: app3, address: %q, check: true}
`, n.frontend, s1.addr, s2.addr, s3.addr))
	for _, s := range []string{"app1", "app2", "app3"} {
		n.waitState(t, "app/"+s, "UP")
	}
	if got := n.sendCounting(t, 30, s1, s2, s3); got[0] == 0 || got[1] == 0 || got[2] == 0 {
		t.Fatalf("all UP: requests per server %v, want some to each", got)
	}

	s2.checkStatus.Store(500)
	s3.checkDelay.Store(int64(time.Second))
	n.waitState(t, "app/app2", "DOWN")
	n.waitState(t, "app/app3", "DOWN")
	if got := n.sendCounting(t, 90, s1, s2, s3); got[0] != 90 || got[1] != 0 || got[2] != 0 {
		t.Errorf("app2 and app3 DOWN: requests per server %v, want [90 0 0]", got)
	}

	for _, tc := range []struct{ server, status, check string }{
		{"app1", "UP", "L7OK/200"},
		{"app2", "DOWN", "L7STS/500"},
		{"app3", "DOWN", "L7TOUT"},
	} {
		cells := statsCells(n.statsRow(t, "app", tc.server))
		// pxname svname status weight check lastchg chkfail chkdown ...
		if len(cells) < 8 || cells[2] != tc.status || !strings.HasPrefix(cells[4], tc.check+" ") || !strings.HasSuffix(cells[4], "ms") {
			t.Errorf("stats row of %s: %q, want status %s and check %s", tc.server, cells, tc.status, tc.check)
		}
		if tc.status == "DOWN" && (cells[6] == "0" || cells[7] != "1") {
			t.Errorf("stats row of %s: %q, want failed checks and one DOWN transition", tc.server, cells)
		}
	}
}

// TestBackupTakeover: backups serve when every primary is DOWN (here
// refusing connections), the primaries take over again when they
// recover, and with nothing left the proxy answers 503.
func TestBackupTakeover(t *testing.T) {
	t.Parallel()
	p1, p2, bk := startServer(t, "app1"), startServer(t, "app2"), startServer(t, "bk1")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, retries: 1, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
      - {name: bk1, address: %q, check: true, backup: true}
`, n.frontend, p1.addr, p2.addr, bk.addr))
	all := []string{"app/app1", "app/app2", "app/bk1"}
	for _, s := range all {
		n.waitState(t, s, "UP")
	}
	if got := n.sendCounting(t, 20, p1, p2, bk); !near(got[0], 10, 2) || !near(got[1], 10, 2) || got[2] != 0 {
		t.Fatalf("primaries UP: requests per server %v, want about [10 10 0]", got)
	}

	p1.refuse(t)
	p2.refuse(t)
	for _, s := range all[:2] {
		if st := n.waitState(t, s, "DOWN"); st.Last.Status != "L4CON" {
			t.Errorf("%s refusing connections: %v, want last check L4CON", s, st)
		}
	}
	if got := n.sendCounting(t, 20, p1, p2, bk); got[2] != 20 {
		t.Errorf("primaries DOWN: requests per server %v, want all 20 to the backup", got)
	}

	p1.serve(t)
	p2.serve(t)
	for _, s := range all[:2] {
		n.waitState(t, s, "UP")
	}
	if got := n.sendCounting(t, 20, p1, p2, bk); !near(got[0], 10, 2) || !near(got[1], 10, 2) || got[2] != 0 {
		t.Errorf("primaries back: requests per server %v, want about [10 10 0]", got)
	}

	p1.refuse(t)
	p2.refuse(t)
	bk.refuse(t)
	for _, s := range all {
		n.waitState(t, s, "DOWN")
	}
	if st := n.send(t, 5); st[503] != 5 {
		t.Errorf("every server DOWN: statuses %v, want 5 × 503", st)
	}
	if cells := statsCells(n.statsRow(t, "app", "BACKEND")); len(cells) < 4 || cells[2] != "DOWN" || cells[3] != "0" {
		t.Errorf("BACKEND row with every server DOWN: %q", cells)
	}
	if !strings.Contains(n.agent.stderr.String(), "backend app has no server available!") {
		t.Errorf("no 'no server available' line in the log:\n%s", n.agent.stderr.String())
	}
}

// TestServerCommands: `fulcrum server drain|disable|enable|weight` move
// new requests as they say, and `fulcrum stats` shows the state.
func TestServerCommands(t *testing.T) {
	t.Parallel()
	s1, s2 := startServer(t, "app1"), startServer(t, "app2")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 100ms, timeout: 100ms}
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
`, n.frontend, s1.addr, s2.addr))
	n.waitState(t, "app/app1", "UP")
	n.waitState(t, "app/app2", "UP")

	cmd := func(want string, args ...string) {
		t.Helper()
		out, err := n.cli(t, args...)
		if err != nil || out != want {
			t.Fatalf("fulcrum %s: %v %q, want %q", strings.Join(args, " "), err, out, want)
		}
	}
	statsStatus := func(server string) string {
		t.Helper()
		cells := statsCells(n.statsRow(t, "app", server))
		return cells[2]
	}

	cmd("app/app1: DRAIN\n", "server", "drain", "app/app1")
	if got := n.sendCounting(t, 40, s1, s2); got[0] != 0 || got[1] != 40 {
		t.Errorf("app1 draining: requests per server %v, want [0 40]", got)
	}
	if st := statsStatus("app1"); st != "DRAIN" {
		t.Errorf("stats status of a draining server: %s", st)
	}

	cmd("app/app1: MAINT\n", "server", "disable", "app/app1")
	if got := n.sendCounting(t, 40, s1, s2); got[0] != 0 || got[1] != 40 {
		t.Errorf("app1 in maintenance: requests per server %v, want [0 40]", got)
	}
	if st := statsStatus("app1"); st != "MAINT" {
		t.Errorf("stats status of a server in maintenance: %s", st)
	}
	if s := n.server(t, "app/app1"); s.Admin != "MAINT" || !s.LocalUp {
		t.Errorf("app1 in maintenance: %+v, want admin MAINT and its checks still passing", s)
	}

	cmd("app/app1: UP\n", "server", "enable", "app/app1")
	if got := n.sendCounting(t, 40, s1, s2); !near(got[0], 20, 2) {
		t.Errorf("app1 enabled: requests per server %v, want about [20 20]", got)
	}

	cmd("app/app1: weight 3 (configured 1)\n", "server", "weight", "app/app1", "3")
	if w := n.statsWeight(t, "app", "app1"); w != 3 {
		t.Errorf("stats --json weight of app1: %d, want 3", w)
	}
	got := n.sendCounting(t, 400, s1, s2)
	if !near(got[0], 300, 20) {
		t.Errorf("weights 3:1 over 400 requests: %v, want app1 300 ± 20", got)
	}

	cmd("app/app1: weight 1 (configured)\n", "server", "weight", "app/app1", "reset")
	if got := n.sendCounting(t, 40, s1, s2); !near(got[0], 20, 2) {
		t.Errorf("weight reset: requests per server %v, want about [20 20]", got)
	}

	out, err := n.cli(t, "server", "drain", "app/app1", "--json")
	var st struct {
		Server, State, Admin string
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Server != "app1" || st.State != "DRAIN" || st.Admin != "DRAIN" {
		t.Errorf("server drain --json: %v %q", err, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "disable", "app/app9"}, `fulcrum: app/app9: no server "app9" in backend "app"`},
		{[]string{"server", "disable", "web/app1"}, `fulcrum: web/app1: no backend "web"`},
		{[]string{"server", "disable", "app1"}, `fulcrum: invalid server "app1": want BACKEND/SERVER`},
		{[]string{"server", "weight", "app/app1", "300"}, `fulcrum: invalid weight "300"`},
	} {
		out, err := n.cli(t, tc.args...)
		if err == nil || !strings.HasPrefix(out, tc.want) {
			t.Errorf("fulcrum %s: %v %q, want an error %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// TestPassiveMarkDown: with observe layer7 and on_error mark-down, live
// 5xx take a server DOWN between checks, which pass. The server starts UP
// (init_state up), reaches full health by fast checks, then is checked
// every 10 s only; at full health a mere failed check (fail-check) would
// not take it down.
func TestPassiveMarkDown(t *testing.T) {
	t.Parallel()
	s1, s2 := startServer(t, "app1"), startServer(t, "app2")
	s1.liveStatus.Store(500)
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check:
      type: http
      path: /healthz
      interval: 10s
      fast_interval: 50ms
      rise: 2
      fall: 3
      init_state: up
      observe: layer7
      error_limit: 3
      on_error: mark-down
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
`, n.frontend, s1.addr, s2.addr))
	n.waitServer(t, 10*time.Second, "app/app1", "UP at full health", func(s srvState) bool {
		return s.State == "UP" && s.Health == s.Rise+s.Fall-1
	})
	checks := s1.checks.Load()

	start := time.Now()
	statuses := n.send(t, 6)
	if statuses[500] != 3 || statuses[200] != 3 {
		t.Errorf("round robin over app1 (live 500s) and app2: statuses %v, want 3 × 500 then app1 out", statuses)
	}
	s := n.waitState(t, "app/app1", "DOWN")
	if s.ChkDown != 1 || s.Last.Status != "HANA" {
		t.Errorf("app1 after 3 live 500s: %v, want one DOWN transition shown as HANA (live traffic), not a check", s)
	}
	if got := n.sendCounting(t, 20, s1, s2); got[0] != 0 || got[1] != 20 {
		t.Errorf("app1 marked down: requests per server %v, want [0 20]", got)
	}
	if live := s1.live.Load(); live != 3 {
		t.Errorf("app1 served %d live requests, want exactly error_limit (3)", live)
	}
	if d, c := time.Since(start), s1.checks.Load()-checks; c != 0 {
		t.Errorf("app1 got %d checks in the %v of live traffic; want none (interval 10s)", c, d)
	}
	if log := n.agent.stderr.String(); !strings.Contains(log, "server app/app1 is DOWN, reason: Health analyze") {
		t.Errorf("no passive DOWN line in the log:\n%s", log)
	}
}

// agentServer is a server's agent: it answers each connection with the
// current reply line.
type agentServer struct {
	port  int
	reply atomic.Value // string
	hits  atomic.Int64
}

func startAgentServer(t *testing.T, reply string) *agentServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &agentServer{port: ln.Addr().(*net.TCPAddr).Port}
	a.reply.Store(reply)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.hits.Add(1)
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, a.reply.Load().(string)+"\n")
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return a
}

// TestAgentCheck: the server's agent says drain, ready, then 50%, and
// the proxy obeys.
func TestAgentCheck(t *testing.T) {
	t.Parallel()
	s1, s2 := startServer(t, "app1"), startServer(t, "app2")
	agent := startAgentServer(t, "up")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    servers:
      - {name: app1, address: %q, weight: 2, agent_port: %d, agent_interval: 100ms}
      - {name: app2, address: %q, weight: 1}
`, n.frontend, s1.addr, agent.port, s2.addr))
	waitFor(t, 5*time.Second, "the first agent check", func() bool { return agent.hits.Load() > 0 })
	if got := n.sendCounting(t, 30, s1, s2); !near(got[0], 20, 2) {
		t.Errorf("weights 2:1: requests per server %v, want about [20 10]", got)
	}

	agent.reply.Store("drain")
	n.waitState(t, "app/app1", "DRAIN")
	if got := n.sendCounting(t, 30, s1, s2); got[0] != 0 {
		t.Errorf("agent says drain: requests per server %v, want none to app1", got)
	}

	agent.reply.Store("ready")
	if s := n.waitState(t, "app/app1", "UP"); s.Admin != "READY" || s.AgentAdmin != "READY" {
		t.Errorf("agent says ready: %+v", s)
	}
	if got := n.sendCounting(t, 30, s1, s2); !near(got[0], 20, 2) {
		t.Errorf("agent says ready: requests per server %v, want about [20 10]", got)
	}

	agent.reply.Store("50%")
	n.waitServer(t, 10*time.Second, "app/app1", "at 50% of weight 2", func(s srvState) bool {
		return s.AgentWeight == 50 && s.Weight == 1
	})
	if got := n.sendCounting(t, 300, s1, s2); !near(got[0], 150, 15) {
		t.Errorf("agent says 50%% (2 → 1 against 1): requests per server %v, want app1 150 ± 15", got)
	}
	if w := n.statsWeight(t, "app", "app1"); w != 1 {
		t.Errorf("stats weight of app1 at 50%%: %d, want 1", w)
	}
}

// TestHealthAcrossReload: a SIGHUP reload keeps the state of unchanged
// servers (UP stays UP, DOWN stays DOWN, the operator's MAINT stays) and
// a new server starts DOWN until its first check passes.
func TestHealthAcrossReload(t *testing.T) {
	t.Parallel()
	a, b, c, d := startServer(t, "a"), startServer(t, "b"), startServer(t, "c"), startServer(t, "d")
	n := newHealthNode(t)
	config := func(interval string, servers ...*hserver) string {
		var sb strings.Builder
		fmt.Fprintf(&sb, `
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: %s, timeout: %s, rise: 1, fall: 2}
    servers:
`, n.frontend, interval, interval)
		for _, s := range servers {
			fmt.Fprintf(&sb, "      - {name: %s, address: %q, check: true}\n", s.name, s.addr)
		}
		return sb.String()
	}
	b.checkStatus.Store(500)
	n.run(t, config("100ms", a, b, c))
	n.waitState(t, "app/a", "UP")
	n.waitState(t, "app/c", "UP")
	// b never passed a check: DOWN from the start, and seen failing.
	n.waitServer(t, 10*time.Second, "app/b", "to fail its checks", func(s srvState) bool { return s.State == "DOWN" && s.ChkFail >= 2 })
	if out, err := n.cli(t, "server", "disable", "app/c"); err != nil || out != "app/c: MAINT\n" {
		t.Fatalf("server disable: %v %q", err, out)
	}
	before, err := n.servers()
	if err != nil {
		t.Fatal(err)
	}

	// d's first check reads the state it arrives in, and with it sends a
	// few requests: none may reach d before its first check passes.
	var mu sync.Mutex
	var dFirst srvState
	var dLive int64
	var firstErr error
	d.runScript([]int{200}, func() {
		m, err := n.servers()
		sent := liveCounts(d)[0]
		st := map[int]int{}
		for range 5 {
			status, _, gerr := get(n.web, "http://"+n.frontend+"/")
			if gerr != nil && err == nil {
				err = gerr
			}
			st[status]++
		}
		mu.Lock()
		defer mu.Unlock()
		firstErr, dFirst, dLive = err, m["app/d"], d.live.Load()-sent
		if st[200] != 5 && firstErr == nil {
			firstErr = fmt.Errorf("requests before d's first check: statuses %v", st)
		}
	})
	// Timing changes keep the state (they are tuned in place).
	n.reload(t, config("300ms", a, b, c, d))
	waitFor(t, 10*time.Second, "d's first check", func() bool { return d.scriptLeft() == 0 })

	mu.Lock()
	if firstErr != nil {
		t.Error(firstErr)
	}
	if dFirst.State != "DOWN" || dFirst.Health != 0 || dLive != 0 {
		t.Errorf("new server d before its first check: %v with %d requests, want DOWN with none", dFirst, dLive)
	}
	mu.Unlock()
	after, err := n.servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app/a", "app/b", "app/c"} {
		was, is := before[name], after[name]
		if is.State != was.State || is.LastChange != was.LastChange || is.ChkDown != was.ChkDown || is.ChkFail < was.ChkFail {
			t.Errorf("%s across the reload: was %v (last change %s), is %v (last change %s)", name, was, was.LastChange, is, is.LastChange)
		}
	}
	if after["app/c"].State != "MAINT" || after["app/b"].State != "DOWN" || after["app/a"].State != "UP" {
		t.Errorf("after the reload: a %s, b %s, c %s; want UP, DOWN, MAINT", after["app/a"].State, after["app/b"].State, after["app/c"].State)
	}
	n.waitState(t, "app/d", "UP")
	if got := n.sendCounting(t, 40, a, b, c, d); !near(got[0], 20, 2) || got[1] != 0 || got[2] != 0 {
		t.Errorf("a and d UP, b DOWN, c MAINT: requests per server %v, want about [20 0 0 20]", got)
	}
}

// TestSlowstart: a server coming back UP ramps its effective weight from
// near 0 to full over the slowstart window.
func TestSlowstart(t *testing.T) {
	t.Parallel()
	s1, s2 := startServer(t, "app1"), startServer(t, "app2")
	n := newHealthNode(t)
	n.run(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 5s}}
frontends: [{name: web, bind: [%q], default_backend: app}]
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 100ms, timeout: 100ms, rise: 1, fall: 1}
    servers:
      - {name: app1, address: %q, check: true, weight: 20, slowstart: 2s}
      - {name: app2, address: %q, check: true}
`, n.frontend, s1.addr, s2.addr))
	n.waitServer(t, 10*time.Second, "app/app1", "UP at full weight", func(s srvState) bool { return s.State == "UP" && s.Weight == 20 })

	s1.checkStatus.Store(500)
	n.waitState(t, "app/app1", "DOWN")
	s1.checkStatus.Store(200)
	n.waitState(t, "app/app1", "UP")

	var ramp []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := n.statsWeight(t, "app", "app1")
		if len(ramp) == 0 || ramp[len(ramp)-1] != w {
			ramp = append(ramp, w)
		}
		if w == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight never back to 20 within 10s of a 2s slowstart: %v", ramp)
		}
		time.Sleep(20 * time.Millisecond)
	}
	between := 0
	for i, w := range ramp {
		if w > 0 && w < 20 {
			between++
		}
		if i > 0 && w < ramp[i-1] {
			t.Errorf("weight went down during slowstart: %v", ramp)
		}
	}
	if between < 3 {
		t.Errorf("weights seen during the 2s slowstart: %v, want several between 0 and 20", ramp)
	}
	out, err := n.cli(t, "stats", "--json")
	if err != nil || !strings.Contains(out, `"weight": 20`) {
		t.Errorf("stats --json after slowstart: %v\n%s", err, out)
	}
	t.Logf("slowstart ramp: %v", ramp)
}
