// Package test holds Fulcrum's end-to-end tests: they drive the built
// binary (FULCRUM_BIN, or one built on the fly) as a user would, over real
// sockets on loopback.
package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// binary returns the fulcrum binary under test: $FULCRUM_BIN (set by
// `make test`), or one built into a temp dir.
func binary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("FULCRUM_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "fulcrum")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/fulcrum")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// proc is a started process, killed at cleanup if still running.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait waits for the process to exit, up to d.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("process did not exit within %v; output:\n%s", d, p.stderr.String())
		return nil
	}
}

// waitFor polls cond every 20 ms up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// node is an agent with its config files and demo backends.
type node struct {
	bin, dir, lbPath, nodePath, frontend string
	backends                             []string
	agent                                *proc
}

func lbConfig(frontend string, backends []string, weights []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global: {hard_stop_after: 5s}
defaults: {mode: http, retries: 3, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: [%q], default_backend: app}
backends:
  - name: app
    servers:
`, frontend)
	for i, a := range backends {
		fmt.Fprintf(&b, "      - {name: app%d, address: %q, weight: %d}\n", i+1, a, weights[i])
	}
	return b.String()
}

func startNode(t *testing.T, nBackends int, env ...string) *node {
	t.Helper()
	n := &node{bin: binary(t), dir: t.TempDir(), frontend: ports.Addr(t)}
	weights := make([]int, nBackends)
	for i := range nBackends {
		addr := ports.Addr(t)
		start(t, nil, n.bin, "demo-backend", "--listen", addr, "--name", fmt.Sprintf("app%d", i+1))
		n.backends = append(n.backends, addr)
		weights[i] = 1
	}
	for _, a := range n.backends {
		waitFor(t, 5*time.Second, "demo backend "+a, func() bool { return dialOK(a) })
	}
	n.lbPath = filepath.Join(n.dir, "lb.yaml")
	n.write(t, lbConfig(n.frontend, n.backends, weights))
	n.nodePath = filepath.Join(n.dir, "node.yaml")
	writeFile(t, n.nodePath, fmt.Sprintf("node: {name: e2e, data_dir: %s}\nadmin: {socket: %s}\nproxy_config: %s\n",
		n.dir, filepath.Join(n.dir, "admin.sock"), n.lbPath))
	n.agent = start(t, env, n.bin, "agent", "--config", n.nodePath)
	waitFor(t, 10*time.Second, "the agent to serve "+n.frontend, func() bool { return dialOK(n.frontend) })
	return n
}

func (n *node) write(t *testing.T, doc string) { writeFile(t, n.lbPath, doc) }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func (n *node) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(n.bin, append(args, "--config", n.nodePath)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

func TestAgentBalancesAndShowsStats(t *testing.T) {
	n := startNode(t, 3)
	c := &http.Client{Timeout: 5 * time.Second}
	seen := map[string]int{}
	for range 30 {
		status, body, err := get(c, "http://"+n.frontend+"/")
		if err != nil || status != 200 {
			t.Fatalf("GET: %d %v", status, err)
		}
		seen[body]++
	}
	for _, name := range []string{"app1", "app2", "app3"} {
		if seen[name] != 10 {
			t.Errorf("round-robin over 3 equal servers: %s answered %d of 30, want 10 (%v)", name, seen[name], seen)
		}
	}
	out, err := n.cli(t, "stats", "--json")
	if err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	var st struct {
		Frontends []struct {
			Name string `json:"name"`
			Stot int64  `json:"stot"`
			H2xx int64  `json:"hrsp_2xx"`
		} `json:"frontends"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("stats --json is not JSON: %v\n%s", err, out)
	}
	if len(st.Frontends) != 1 || st.Frontends[0].H2xx != 30 {
		t.Errorf("stats: %+v, want frontend web with 30 2xx", st.Frontends)
	}
	table, err := n.cli(t, "stats")
	if err != nil || !strings.Contains(table, "app1") || !strings.Contains(table, "FRONTEND") {
		t.Errorf("stats table: %v\n%s", err, table)
	}
}

// TestReloadUnderLoad: while clients send requests, the proxy config is
// rewritten and SIGHUP sent again and again, an invalid version included;
// not one request may fail.
func TestReloadUnderLoad(t *testing.T) {
	n := startNode(t, 3)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			defer c.CloseIdleConnections()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, _, err := get(c, "http://"+n.frontend+"/")
				if err != nil || status != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d err %v", status, err))
					continue
				}
				ok.Add(1)
			}
		})
	}
	configs := []string{
		lbConfig(n.frontend, n.backends, []int{1, 1, 1}),
		lbConfig(n.frontend, n.backends[:2], []int{3, 1}),
		"frontends: [{name: web, bind: [oops]}]\n", // invalid: refused, the running config stays
		lbConfig(n.frontend, n.backends[1:], []int{1, 2}),
	}
	for i := range 12 {
		before := ok.Load()
		n.write(t, configs[i%len(configs)])
		if err := n.agent.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "requests after a reload", func() bool { return ok.Load() > before+50 })
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed across 12 reloads; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if log := n.agent.stderr.String(); !strings.Contains(log, "path=frontends[0].bind[0]") || !strings.Contains(log, "missing port") {
		t.Errorf("the invalid reload's fault was not logged with its path; log:\n%s", n.agent.stderr.String())
	}
	t.Logf("%d requests, none failed, across 12 reloads", ok.Load())
}

// TestGracefulStop: SIGTERM lets an in-flight request finish, closes idle
// keep-alive connections, tells systemd STOPPING=1, and exits 0.
func TestGracefulStop(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var msgs syncBuffer
	go func() {
		buf := make([]byte, 4096)
		for {
			k, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs.Write(append(buf[:k:k], '\n'))
		}
	}()

	slow := startSlowBackend(t, 500*time.Millisecond)
	n := startNode(t, 1, "NOTIFY_SOCKET="+sock)
	n.write(t, lbConfig(n.frontend, []string{slow}, []int{1}))
	n.agent.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 5*time.Second, "RELOADING then READY", func() bool {
		return strings.Count(msgs.String(), "READY=1") >= 2 && strings.Contains(msgs.String(), "RELOADING=1")
	})

	// A keep-alive connection that has served a request and waits for the
	// next. (One that never sent a byte would not have reached the agent:
	// HTTP listeners defer accept until the first bytes.)
	idle, err := net.Dial("tcp", n.frontend)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("the keep-alive connection's first request: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	type result struct {
		status int
		close  bool
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + n.frontend + "/")
		if err != nil {
			res <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res <- result{status: resp.StatusCode, close: resp.Close}
	}()
	waitFor(t, 5*time.Second, "the slow request to reach the backend", func() bool { return slowInFlight.Load() > 0 })
	n.agent.cmd.Process.Signal(syscall.SIGTERM)

	r := <-res
	if r.err != nil || r.status != 200 {
		t.Fatalf("in-flight request during SIGTERM: %d %v", r.status, r.err)
	}
	if !r.close {
		t.Errorf("the last response of a stopping proxy should say Connection: close")
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle keep-alive connection at stop: read gave %v, want EOF", err)
	}
	if err := n.agent.wait(t, 10*time.Second); err != nil {
		t.Errorf("agent exit: %v\n%s", err, n.agent.stderr.String())
	}
	if !strings.Contains(msgs.String(), "STOPPING=1") {
		t.Errorf("no STOPPING=1 sent; got %q", msgs.String())
	}
	if dialOK(n.frontend) {
		t.Errorf("frontend still accepts after exit")
	}
}

var slowInFlight atomic.Int64

// startSlowBackend answers after d: the delay is the workload under test.
func startSlowBackend(t *testing.T, d time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowInFlight.Add(1)
		defer slowInFlight.Add(-1)
		time.Sleep(d)
		io.WriteString(w, "slow\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestVersionFromBuild(t *testing.T) {
	bin, want := os.Getenv("FULCRUM_BIN"), os.Getenv("FULCRUM_VERSION")
	if bin == "" || want == "" {
		// No binary from `make`: build one the way the Makefile does.
		want = "v9.9.9-e2e"
		bin = filepath.Join(t.TempDir(), "fulcrum")
		cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+want, "-o", bin, "../cmd/fulcrum")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, b)
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("version: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("version printed %q, want it to contain %q", out, want)
	}
}

func TestConfigValidateCLI(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, `
backends:
  - {name: a, servers: [{name: s, address: "127.0.0.1:80"}]}
  - {name: b, servers: [{name: s, address: "127.0.0.1"}]}
frontends:
  - {name: f, bind: ["127.0.0.1:80"], default_backend: c}
`)
	out, err := exec.Command(binary(t), "config", "validate", "-f", bad).CombinedOutput()
	var ee *exec.ExitError
	if !errorsAs(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("validate of a bad file: err %v, want a non-zero exit", err)
	}
	for _, want := range []string{"backends[1].servers[0].address: missing port", `frontends[0].default_backend: unknown backend "c"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	good := filepath.Join(dir, "empty.yaml")
	writeFile(t, good, "")
	if out, err := exec.Command(binary(t), "config", "validate", "-f", good).CombinedOutput(); err != nil {
		t.Errorf("an empty config must be valid: %v\n%s", err, out)
	}
}

func errorsAs(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*ee = e
	}
	return ok
}
