package cluster

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// A valid proxy config without frontends: it binds nothing, so tests can
// run side by side.
const backendsOnly = `
backends:
  - name: app
    servers:
      - {name: app1, address: 127.0.0.1:9001}
`

// Two faults, one of them the example.
const invalidConfig = `
backends:
  - name: app
    servers:
      - {name: app1, address: 127.0.0.1:9001}
  - name: api
    balance: fastest
    servers:
      - {name: api1, address: 10.0.0.1}
`

// testNode is an agent under test with its temp dir, notification socket
// and running Run.
type testNode struct {
	dir    string
	cfg    NodeConfig
	agent  *Agent
	notify *notifySocket
	cancel context.CancelFunc
	done   chan error
}

func nodeConfigIn(dir string) NodeConfig {
	return NodeConfig{
		Node:        NodeSection{Name: "lb1", DataDir: filepath.Join(dir, "data"), Role: "voter"},
		Admin:       AdminSection{Socket: filepath.Join(dir, "run", "fulcrum", "admin.sock")},
		ProxyConfig: filepath.Join(dir, "lb.yaml"),
		Log:         LogSection{Level: "debug", Format: "text"},
		Cluster:     testClusterSection,
	}
}

// newTestNode builds an agent on a proxy config holding proxyConfig (none
// is written if it is "-"); start runs it.
func newTestNode(t *testing.T, proxyConfig string) *testNode {
	t.Helper()
	checkGoroutines(t)
	dir, err := os.MkdirTemp("", "fulcrum-agent") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &testNode{dir: dir, cfg: nodeConfigIn(dir)}
	if proxyConfig != "-" {
		writeFile(t, n.cfg.ProxyConfig, proxyConfig)
	}
	n.notify = listenNotify(t, filepath.Join(dir, "notify.sock"))
	n.agent, err = NewAgent(n.cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		WithVersion("v1.2.3-test"), WithNotifier(NewNotifier(n.notify.path, discardLogger())))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// start runs the agent and waits for READY=1.
func (n *testNode) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- n.agent.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
	if got := n.notify.next(t); got != NotifyReady {
		t.Fatalf("first notification %q, want READY=1", got)
	}
}

// stop cancels Run and returns its error; it may be called more than once.
func (n *testNode) stop(t *testing.T) error {
	t.Helper()
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	return nil
}

// testWriter sends log lines to t.Log so that they show with failures.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// checkGoroutines fails the test if it leaves goroutines behind.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			runtime.Gosched()
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestAgentNotifiesAroundRunReloadStop(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)

	before, _ := MonotonicUsec()
	if err := n.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	after, _ := MonotonicUsec()
	checkReloading(t, n.notify.next(t), before, after)
	if got := n.notify.next(t); got != NotifyReady {
		t.Errorf("after reload %q, want READY=1", got)
	}

	// A refused reload still ends with READY=1: the reload is over.
	writeFile(t, n.cfg.ProxyConfig, invalidConfig)
	if err := n.agent.Reload(); err == nil {
		t.Fatal("invalid config reloaded")
	}
	if got := n.notify.next(t); !strings.HasPrefix(got, NotifyReloading+"\n") {
		t.Errorf("got %q, want RELOADING=1", got)
	}
	if got := n.notify.next(t); got != NotifyReady {
		t.Errorf("after refused reload %q, want READY=1", got)
	}

	if err := n.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := n.notify.next(t); got != NotifyStopping {
		t.Errorf("at stop %q, want STOPPING=1", got)
	}
	if _, err := os.Lstat(n.cfg.Admin.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind: %v", err)
	}
	if err := n.agent.Reload(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Reload after stop: %v, want ErrNotRunning", err)
	}
}

func TestAgentReloadKeepsRunningConfigOnFaults(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	first := n.agent.RunningConfig()

	writeFile(t, n.cfg.ProxyConfig, invalidConfig)
	err := n.agent.Reload()
	ce, ok := errors.AsType[*ConfigError](err)
	if !ok {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	want := state.Errors{
		{Path: "backends[1].balance", Msg: ce.Faults[0].Msg},
		{Path: "backends[1].servers[0].address", Msg: "missing port"},
	}
	if len(ce.Faults) != 2 || ce.Faults[0].Path != want[0].Path || ce.Faults[1] != want[1] {
		t.Errorf("faults %v, want %v", ce.Faults, want)
	}
	if n.agent.RunningConfig() != first {
		t.Error("running config replaced by a refused one")
	}

	// A vanished file is refused on reload too.
	os.Remove(n.cfg.ProxyConfig)
	if err := n.agent.Reload(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reload of a missing file: %v", err)
	}

	writeFile(t, n.cfg.ProxyConfig, backendsOnly+"  - name: two\n    servers: []\n")
	if err := n.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	if rc := n.agent.RunningConfig(); rc == first || len(rc.Config.Backends) != 2 || rc.LoadedAt.Before(first.LoadedAt) {
		t.Errorf("running config after reload: %+v", rc)
	}
}

func TestAgentStartsWithMissingOrEmptyProxyConfig(t *testing.T) {
	for name, content := range map[string]string{"missing": "-", "empty": ""} {
		t.Run(name, func(t *testing.T) {
			n := newTestNode(t, content)
			n.start(t)
			rc := n.agent.RunningConfig()
			if rc == nil || len(rc.Config.Frontends) != 0 || len(rc.Config.Backends) != 0 {
				t.Fatalf("running config %+v, want empty", rc)
			}
			if err := n.stop(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAgentRefusesToStartOnFaults(t *testing.T) {
	n := newTestNode(t, invalidConfig)
	err := n.agent.Run(context.Background())
	ce, ok := errors.AsType[*ConfigError](err)
	if !ok || len(ce.Faults) != 2 {
		t.Fatalf("want a *ConfigError with 2 faults, got %v", err)
	}
	if !strings.Contains(err.Error(), "backends[1].servers[0].address: missing port") {
		t.Errorf("error lacks the fault: %v", err)
	}
	if _, err := os.Lstat(n.cfg.Admin.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket created by a failed start: %v", err)
	}
	if err := n.agent.Run(context.Background()); err == nil {
		t.Error("second Run accepted")
	}
}

func TestAgentRefusesDecodeErrors(t *testing.T) {
	n := newTestNode(t, "global:\n  maxconns: 10\n")
	err := n.agent.Run(context.Background())
	if _, ok := errors.AsType[*ConfigError](err); !ok || !strings.Contains(err.Error(), "maxconns") {
		t.Fatalf("got %v", err)
	}
}

func TestAgentReloadBeforeRun(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	if err := n.agent.Reload(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("got %v, want ErrNotRunning", err)
	}
	if st := n.agent.Stats(); st.Frontends == nil || st.Backends == nil {
		t.Errorf("stats before Run: %+v", st)
	}
}

func TestNewAgentValidates(t *testing.T) {
	cfg := nodeConfigIn(t.TempDir())
	cfg.Admin.Socket = ""
	if _, err := NewAgent(cfg, discardLogger()); err == nil || !strings.Contains(err.Error(), "admin.socket: missing") {
		t.Errorf("got %v", err)
	}
	if _, err := NewAgent(nodeConfigIn(t.TempDir()), nil); err == nil {
		t.Error("nil logger accepted")
	}
}

// testClusterSection is a valid cluster section on loopback.
var testClusterSection = ClusterSection{BindAddr: "127.0.0.1", RaftPort: DefaultRaftPort, GossipPort: DefaultGossipPort, APIPort: DefaultAPIPort}
