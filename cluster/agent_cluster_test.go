package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/health"
	"github.com/fulcrum-lb/fulcrum/state"
)

// The agents of these tests share one host, so the replicated config binds
// its frontend on 127.0.0.1:0: every agent's engine binds a port of its
// own for the same document, found with Engine.Addrs.
const anyPort = "127.0.0.1:0"

// countingBackend answers every request with its name and counts them.
type countingBackend struct {
	name string
	srv  *httptest.Server
	hits atomic.Int64
}

func newCountingBackend(t *testing.T, name string) *countingBackend {
	b := &countingBackend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		io.WriteString(w, name+"\n")
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *countingBackend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

// webDoc is a proxy config: frontend web on anyPort, backend app over the
// servers given, named app1, app2, ... after their position in all.
func webDoc(all []*countingBackend, use ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: [%q], default_backend: app}
backends:
  - name: app
    servers:
`, anyPort)
	for _, i := range use {
		fmt.Fprintf(&b, "      - {name: app%d, address: %q}\n", i, all[i-1].addr())
	}
	return b.String()
}

// logBuffer keeps an agent's log; it is shown when the test fails.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cnode is one agent of an in-process cluster: its own temp dir, admin
// socket and loopback ports.
type cnode struct {
	name   string
	cfg    NodeConfig
	agent  *Agent
	client *AdminClient
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

// newCNode starts a standalone agent on a proxy config file holding doc
// (none if doc is "").
func newCNode(t *testing.T, name, doc string) *cnode {
	t.Helper()
	n := &cnode{name: name, cfg: testNodeConfig(t, name), logs: &logBuffer{}}
	if doc != "" {
		writeFile(t, n.cfg.ProxyConfig, doc)
	}
	n.client = testClient(t, n.cfg.Admin.Socket)
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			log := n.logs.String()
			if len(log) > 20000 {
				log = "..." + log[len(log)-20000:]
			}
			t.Logf("log of %s:\n%s", name, log)
		}
	})
	n.start(t)
	return n
}

// start runs a new Agent on the node's config and data dir, and waits
// for its admin API.
func (n *cnode) start(t *testing.T) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", n.name)
	a, err := NewAgent(n.cfg, log, WithVersion("test"), WithNotifier(NewNotifier("", discardLogger())))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.agent, n.cancel, n.done = a, cancel, make(chan error, 1)
	go func() { n.done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-n.done:
			n.cancel = nil
			t.Fatalf("%s: Run: %v", n.name, err)
		default:
		}
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_, err := n.client.Health(cctx)
		ccancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: admin API not up: %v", n.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop cancels Run and waits for it; it may be called more than once.
func (n *cnode) stop(t *testing.T) {
	t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("%s: Run: %v", n.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: Run did not return after cancel", n.name)
	}
	n.client.Close()
}

// frontend is the address the node's engine bound for anyPort.
func (n *cnode) frontend(t *testing.T) string {
	t.Helper()
	var addr string
	waitUntil(t, 5*time.Second, n.name+" to bind its frontend", func() bool {
		if a, ok := n.agent.engine.Load().Addrs()[anyPort]; ok {
			addr = a.String()
		}
		return addr != ""
	})
	return addr
}

func (n *cnode) status(t *testing.T) ClusterStatus {
	t.Helper()
	st, err := n.client.ClusterStatus(callCtx(t))
	if err != nil {
		t.Fatalf("%s: cluster status: %v", n.name, err)
	}
	return st
}

func (n *cnode) source() string {
	if rc := n.agent.RunningConfig(); rc != nil {
		return rc.Source
	}
	return ""
}

var plainHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// fetch sends one request through a frontend and returns the body.
func fetch(addr string) (string, error) {
	resp, err := plainHTTP.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b)), err
}

// waitServes polls addr until it answers want.
func waitServes(t *testing.T, who, addr, want string) {
	t.Helper()
	var got string
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, err = fetch(addr); err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s) answers %q (err %v), want %q", who, addr, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// apiError asserts err is an *APIError with code and a message holding
// every one of want.
func apiError(t *testing.T, what string, err error, code string, want ...string) *APIError {
	t.Helper()
	ae, ok := errors.AsType[*APIError](err)
	if !ok {
		t.Fatalf("%s: got %v (%T), want an *APIError with code %s", what, err, err, code)
	}
	if ae.Code != code {
		t.Errorf("%s: code %q (%s), want %q", what, ae.Code, ae.Message, code)
	}
	for _, w := range want {
		if !strings.Contains(ae.Message, w) {
			t.Errorf("%s: message %q lacks %q", what, ae.Message, w)
		}
	}
	return ae
}

// TestAgentClusterLifecycle drives three in-process agents through the
// admin API as the CLI does: standalone refusals, init without a gap in
// service, joins, replicated applies through any node, history, diff,
// rollback, conditional writes, a version no node can run, failover,
// replicated drain, a restart that rejoins, and loss of quorum.
func TestAgentClusterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("three agents: not in -short")
	}
	bk := []*countingBackend{newCountingBackend(t, "app1"), newCountingBackend(t, "app2")}
	a := newCNode(t, "lb1", webDoc(bk, 1))
	b := newCNode(t, "lb2", webDoc(bk, 2))
	c := newCNode(t, "lb3", "")
	nodes := []*cnode{a, b, c}
	ctx := func() context.Context { return callCtx(t) }

	t.Run("standalone refusals point at cluster init", func(t *testing.T) {
		_, err := b.client.ApplyConfig(ctx(), webDoc(bk, 1), 0, time.Second)
		ae := apiError(t, "apply on a standalone node", err, "standalone", "fulcrum cluster init")
		if ae.Status != http.StatusConflict {
			t.Errorf("status %d, want 409", ae.Status)
		}
		_, err = b.client.ConfigHistory(ctx())
		apiError(t, "history on a standalone node", err, "standalone", "fulcrum cluster init")
		_, err = b.client.RollbackConfig(ctx(), 1, 0, time.Second)
		apiError(t, "rollback on a standalone node", err, "standalone", "fulcrum cluster init")
		st := b.status(t)
		if st.Clustered || len(st.Warnings) == 0 || !strings.Contains(st.Warnings[0], "fulcrum cluster init") {
			t.Errorf("standalone status: %+v", st)
		}
		waitServes(t, "standalone lb2", b.frontend(t), "app2")
	})

	var token string
	fa := a.frontend(t)
	if !t.Run("init imports the proxy config and keeps serving", func(t *testing.T) {
		waitServes(t, "standalone lb1", fa, "app1")
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if body, err := fetch(fa); err != nil || body != "app1" {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%q %v", body, err))
				} else {
					ok.Add(1)
				}
			}
		})
		res, err := a.client.ClusterInit(ctx())
		time.Sleep(200 * time.Millisecond) // and a little after
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("init: %v", err)
		}
		if failed.Load() != 0 || ok.Load() == 0 {
			t.Errorf("across init: %d requests failed (first: %v), %d succeeded", failed.Load(), firstErr.Load(), ok.Load())
		}
		token = res.Token
		want := fmt.Sprintf("fulcrum cluster join 127.0.0.1:%d --token %s", a.cfg.Cluster.APIPort, res.Token)
		if res.Token == "" || res.JoinCommand != want {
			t.Errorf("init result %+v, want join command %q", res, want)
		}
		if b, _ := json.Marshal(res); !bytes.Contains(b, []byte(`"token":`)) || !bytes.Contains(b, []byte(`"join_command":`)) {
			t.Errorf("init JSON %s lacks token or join_command", b)
		}
		waitUntil(t, 5*time.Second, "lb1 to run version 1", func() bool { return a.source() == "cluster config version 1" })
		if got := a.frontend(t); got != fa {
			t.Errorf("frontend moved from %s to %s across init", fa, got)
		}
		h, err := a.client.ConfigHistory(ctx())
		if err != nil || len(h) != 1 || h[0].Kind != state.KindImport || h[0].Version != 1 {
			t.Fatalf("history after init: %+v %v", h, err)
		}
		cv, err := a.client.ConfigVersion(ctx(), 1)
		if err != nil || cv.YAML != webDoc(bk, 1) {
			t.Errorf("version 1 is not lb1's file: %q %v", cv.YAML, err)
		}
		if _, err := a.client.ClusterInit(ctx()); err == nil {
			t.Error("a second init was accepted")
		}
	}) {
		t.FailNow()
	}

	seed := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.cfg.Cluster.APIPort))
	if !t.Run("join adopts the cluster config", func(t *testing.T) {
		for _, n := range []*cnode{b, c} {
			jctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			err := n.client.ClusterJoin(jctx, seed, token)
			cancel()
			if err != nil {
				t.Fatalf("join %s: %v", n.name, err)
			}
		}
		waitUntil(t, 15*time.Second, "three live voters running version 1", func() bool {
			st := a.status(t)
			if len(st.Nodes) != 3 || !st.Quorum {
				return false
			}
			for _, ns := range st.Nodes {
				if ns.Gossip != "alive" || ns.AppliedConfigVersion != 1 || ns.Raft == "none" {
					return false
				}
			}
			return true
		})
		// lb2's own file is set aside: it serves version 1 on the same
		// listener; lb3 binds one for it.
		for _, n := range nodes {
			waitServes(t, n.name, n.frontend(t), "app1")
		}
		st := b.status(t)
		if st.Leader != "lb1" || st.ConfigVersion != 1 || st.Node != "lb2" {
			t.Errorf("status on lb2: leader %q, version %d, node %q", st.Leader, st.ConfigVersion, st.Node)
		}
		leaders := 0
		for _, ns := range st.Nodes {
			if ns.Raft == "leader" {
				leaders++
			} else if ns.Raft != "follower" {
				t.Errorf("node %s raft %q", ns.Name, ns.Raft)
			}
		}
		if leaders != 1 {
			t.Errorf("%d leaders in %+v", leaders, st.Nodes)
		}
		// The --json contract of `cluster status`.
		raw, _ := json.Marshal(st)
		var m map[string]any
		json.Unmarshal(raw, &m)
		for _, k := range []string{"leader", "term", "quorum", "nodes", "config_version", "warnings"} {
			if _, ok := m[k]; !ok {
				t.Errorf("status JSON lacks %q: %s", k, raw)
			}
		}
		for _, k := range []string{"name", "address", "gossip", "raft", "applied_config_version"} {
			if _, ok := m["nodes"].([]any)[0].(map[string]any)[k]; !ok {
				t.Errorf("status JSON node lacks %q: %s", k, raw)
			}
		}
		ms, err := c.client.Members(ctx())
		if err != nil || len(ms) != 3 {
			t.Errorf("members: %+v %v", ms, err)
		}
	}) {
		t.FailNow()
	}

	t.Run("apply through a follower reaches every data plane", func(t *testing.T) {
		start := time.Now()
		res, err := b.client.ApplyConfig(ctx(), webDoc(bk, 2), 0, 5*time.Second)
		if err != nil {
			t.Fatalf("apply through lb2: %v", err)
		}
		took := time.Since(start)
		if res.Version != 2 || len(res.Pending) != 0 {
			t.Errorf("apply result %+v, want version 2, none pending", res)
		}
		for _, n := range nodes {
			if res.Applied[n.name] != 2 {
				t.Errorf("apply result: %s at %d, want 2 (%+v)", n.name, res.Applied[n.name], res.Applied)
			}
			if n.source() != "cluster config version 2" {
				t.Errorf("%s runs %q right after apply returned", n.name, n.source())
			}
			waitServes(t, n.name, n.frontend(t), "app2")
		}
		t.Logf("config version 2 committed and applied on 3 nodes in %v", took.Round(time.Millisecond))
	})

	t.Run("an invalid config is refused with its faults", func(t *testing.T) {
		_, err := c.client.ApplyConfig(ctx(), invalidConfig, 0, time.Second)
		ae, ok := errors.AsType[*APIError](err)
		if !ok || ae.Status != http.StatusUnprocessableEntity || len(ae.Faults) != 2 {
			t.Fatalf("invalid apply: %v, want 422 with 2 faults", err)
		}
		if ae.Faults[1].Path != "backends[1].servers[0].address" {
			t.Errorf("faults %+v", ae.Faults)
		}
		if cv, err := c.client.ConfigVersion(ctx(), 0); err != nil || cv.Version != 2 {
			t.Errorf("after a refused apply the version is %d (%v), want 2", cv.Version, err)
		}
	})

	t.Run("history, diff and rollback", func(t *testing.T) {
		h, err := c.client.ConfigHistory(ctx())
		if err != nil || len(h) != 2 {
			t.Fatalf("history: %+v %v", h, err)
		}
		if h[0].Origin != "lb1 (import)" || h[1].Kind != state.KindApply || h[1].Origin != "lb2" || h[1].YAML != "" {
			t.Errorf("history %+v", h)
		}
		d, err := c.client.ConfigDiff(ctx(), 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"--- version 1", "+++ version 2", "-      - {name: app1, address: \"" + bk[0].addr(), "+      - {name: app2, address: \"" + bk[1].addr()} {
			if !strings.Contains(d, want) {
				t.Errorf("diff lacks %q:\n%s", want, d)
			}
		}
		if _, err := c.client.ConfigDiff(ctx(), 1, 9); err == nil {
			t.Error("diff with an unknown version accepted")
		}
		res, err := c.client.RollbackConfig(ctx(), 1, 0, 5*time.Second)
		if err != nil || res.Version != 3 || len(res.Pending) != 0 {
			t.Fatalf("rollback: %+v %v", res, err)
		}
		cv, err := a.client.ConfigVersion(ctx(), 0)
		if err != nil || cv.Kind != state.KindRollback || cv.Source != 1 || cv.YAML != webDoc(bk, 1) {
			t.Errorf("version after rollback: %+v %v", cv, err)
		}
		for _, n := range nodes {
			waitServes(t, n.name, n.frontend(t), "app1")
		}
		_, err = c.client.RollbackConfig(ctx(), 42, 0, time.Second)
		apiError(t, "rollback to a missing version", err, "not_found", "42")
	})

	t.Run("if-version refuses a stale write", func(t *testing.T) {
		_, err := a.client.ApplyConfig(ctx(), webDoc(bk, 1, 2), 2, time.Second)
		apiError(t, "apply --if-version 2 at version 3", err, "stale", "stale", "version 3")
		if cv, _ := a.client.ConfigVersion(ctx(), 0); cv.Version != 3 {
			t.Errorf("a stale write changed the version to %d", cv.Version)
		}
		res, err := a.client.ApplyConfig(ctx(), webDoc(bk, 1, 2), 3, 5*time.Second)
		if err != nil || res.Version != 4 {
			t.Fatalf("apply --if-version 3: %+v %v", res, err)
		}
	})

	t.Run("a version no node can run is reported and the previous one stays", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		doc := strings.Replace(webDoc(bk, 1, 2), "frontends:\n", fmt.Sprintf("frontends:\n  - {name: busy, bind: [%q], default_backend: app}\n", busy.Addr()), 1)
		res, err := b.client.ApplyConfig(ctx(), doc, 0, time.Second)
		if err != nil || res.Version != 5 {
			t.Fatalf("apply: %+v %v", res, err)
		}
		if len(res.Pending) != 3 {
			t.Errorf("pending %v, want every node (none can bind %s)", res.Pending, busy.Addr())
		}
		waitUntil(t, 5*time.Second, "status to name the failure", func() bool {
			st := a.status(t)
			n := 0
			for _, w := range st.Warnings {
				if strings.Contains(w, "cannot apply the config") && strings.Contains(w, "version 5") {
					n++
				}
			}
			return n == 3
		})
		for _, n := range nodes {
			if n.source() != "cluster config version 4" {
				t.Errorf("%s runs %q, want version 4 kept", n.name, n.source())
			}
			if _, err := fetch(n.frontend(t)); err != nil {
				t.Errorf("%s stopped serving: %v", n.name, err)
			}
		}
		res, err = b.client.RollbackConfig(ctx(), 4, 0, 5*time.Second)
		if err != nil || res.Version != 6 || len(res.Pending) != 0 {
			t.Fatalf("rollback to 4: %+v %v", res, err)
		}
		// lb2 saw every node run version 6; lb1 hears it through gossip.
		waitUntil(t, 5*time.Second, "lb1 to see every node run version 6 without error", func() bool {
			st := a.status(t)
			for _, ns := range st.Nodes {
				if ns.ApplyError != "" || ns.AppliedConfigVersion != 6 {
					return false
				}
			}
			return !slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "cannot apply") })
		})
	})

	t.Run("failover hands the leadership over", func(t *testing.T) {
		// With 300 ms timers, a busy host (-race) may have moved the
		// leadership already: ask who leads.
		var leader, follower, target *cnode
		waitUntil(t, 5*time.Second, "a leader", func() bool {
			name := a.status(t).Leader
			leader, follower, target = nil, nil, nil
			for _, n := range nodes {
				switch {
				case n.name == name:
					leader = n
				case follower == nil:
					follower = n
				default:
					target = n
				}
			}
			return leader != nil
		})
		err := follower.client.ClusterFailover(ctx(), target.name)
		if err == nil || !strings.Contains(err.Error(), "run failover on the leader") {
			t.Errorf("failover on a follower: %v", err)
		}
		if err := leader.client.ClusterFailover(ctx(), target.name); err != nil {
			t.Fatalf("failover to %s: %v", target.name, err)
		}
		for _, n := range nodes {
			waitUntil(t, 5*time.Second, n.name+" to see "+target.name+" lead", func() bool { return n.status(t).Leader == target.name })
		}
	})

	t.Run("drain is replicated and every data plane obeys it", func(t *testing.T) {
		st, err := c.client.SetServerAdmin(ctx(), "app", "app1", health.AdminDrain)
		if err != nil {
			t.Fatalf("drain through lb3: %v", err)
		}
		if st.Admin != health.AdminDrain.String() {
			t.Errorf("drain answered admin %q", st.Admin)
		}
		for _, n := range nodes {
			waitUntil(t, 5*time.Second, n.name+" to drain app1", func() bool {
				m := n.agent.member.Load()
				rs, _ := m.store.ServerState("app", "app1")
				hs, _ := n.agent.monitor.Load().Status("app", "app1")
				return rs.Admin == state.AdminDrain && hs.Admin == health.AdminDrain
			})
		}
		before := bk[0].hits.Load()
		for _, n := range nodes {
			fe := n.frontend(t)
			for range 10 {
				if body, err := fetch(fe); err != nil || body != "app2" {
					t.Errorf("%s with app1 drained answered %q (%v), want app2", n.name, body, err)
				}
			}
		}
		// A while later (past the follower loop's 2 s fallback tick), the
		// drain still holds everywhere.
		time.Sleep(2500 * time.Millisecond)
		for _, n := range nodes {
			fe := n.frontend(t)
			for range 5 {
				fetch(fe)
			}
		}
		if got := bk[0].hits.Load(); got != before {
			t.Errorf("app1 received %d new requests while drained", got-before)
		}
		if _, err := a.client.SetServerAdmin(ctx(), "app", "app1", health.AdminReady); err != nil {
			t.Fatalf("enable: %v", err)
		}
		for _, n := range nodes {
			fe := n.frontend(t)
			waitUntil(t, 5*time.Second, n.name+" to send to app1 again", func() bool {
				body, _ := fetch(fe)
				return body == "app1"
			})
		}
	})

	t.Run("a restarted node rejoins with its state and catches up", func(t *testing.T) {
		// A Raft snapshot one version behind what lb3 runs: at its restart
		// the store starts from it, an older version than the node's.
		if err := c.agent.member.Load().node.raft.raft.Snapshot().Error(); err != nil {
			t.Fatalf("raft snapshot on lb3: %v", err)
		}
		newer, err := a.client.ApplyConfig(ctx(), webDoc(bk, 2, 1), 0, 5*time.Second)
		if err != nil || newer.Applied["lb3"] != newer.Version {
			t.Fatalf("apply before the restart: %+v %v", newer, err)
		}
		last := c.source()
		c.stop(t)
		waitUntil(t, 5*time.Second, "lb3 to leave gossip", func() bool {
			for _, ns := range a.status(t).Nodes {
				if ns.Name == "lb3" {
					return ns.Gossip != "alive" && ns.Raft != "none"
				}
			}
			return false
		})
		res, err := a.client.ApplyConfig(ctx(), webDoc(bk, 2), 0, 5*time.Second)
		if err != nil {
			t.Fatalf("apply with lb3 down: %v", err)
		}
		if slices.Contains(res.Pending, "lb3") || res.Applied["lb1"] != res.Version || res.Applied["lb2"] != res.Version {
			t.Errorf("apply with lb3 down: %+v", res)
		}
		mark := len(c.logs.String())
		c.start(t)
		// It started on the version it ran last, before Raft caught up.
		want := fmt.Sprintf("proxy_config=%q", last+" (as last applied)")
		if log := c.logs.String()[mark:]; !strings.Contains(log, want) {
			t.Errorf("restart log lacks %s:\n%s", want, log)
		}
		waitUntil(t, 10*time.Second, "lb3 to catch up", func() bool {
			return c.source() == fmt.Sprintf("cluster config version %d", res.Version)
		})
		waitServes(t, "restarted lb3", c.frontend(t), "app2")
		// While Raft replays its log, the store passes through the older
		// versions: the data plane must not go back to any of them.
		var ran uint64
		fmt.Sscanf(last, "cluster config version %d", &ran)
		for _, line := range strings.Split(c.logs.String()[mark:], "\n") {
			var v uint64
			if !strings.Contains(line, `msg="cluster config applied"`) {
				continue
			}
			if _, after, ok := strings.Cut(line, " version="); ok {
				fmt.Sscanf(after, "%d", &v)
				if v <= ran {
					t.Errorf("restarted lb3, which ran version %d, applied version %d while catching up", ran, v)
				}
			}
		}
		waitUntil(t, 10*time.Second, "lb1 to see lb3 alive at the latest version", func() bool {
			for _, ns := range a.status(t).Nodes {
				if ns.Name == "lb3" {
					return ns.Gossip == "alive" && ns.AppliedConfigVersion == res.Version
				}
			}
			return false
		})
		if st := c.status(t); !st.Clustered || len(st.Nodes) != 3 {
			t.Errorf("restarted lb3 status: %+v", st)
		}
	})

	// The first node's cluster record names only itself as a gossip seed:
	// once its peers have seen it leave, a restart must still bring it
	// back into gossip, not only into Raft.
	t.Run("the first node restarted rejoins gossip", func(t *testing.T) {
		a.stop(t)
		waitUntil(t, 5*time.Second, "lb2 to see lb1 leave", func() bool {
			for _, ns := range b.status(t).Nodes {
				if ns.Name == "lb1" {
					return ns.Gossip != "alive"
				}
			}
			return false
		})
		res, err := b.client.ApplyConfig(ctx(), webDoc(bk, 1, 2), 0, 2*time.Second)
		if err != nil {
			t.Fatalf("apply with lb1 down: %v", err)
		}
		a.start(t)
		waitUntil(t, 10*time.Second, "lb1 to catch up through Raft", func() bool {
			return a.source() == fmt.Sprintf("cluster config version %d", res.Version)
		})
		var last ClusterStatus
		deadline := time.Now().Add(10 * time.Second)
		for {
			last = b.status(t)
			back := slices.ContainsFunc(last.Nodes, func(ns NodeStatus) bool {
				return ns.Name == "lb1" && ns.Gossip == "alive" && ns.AppliedConfigVersion == res.Version
			})
			if back {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("10 s after its restart lb2 still does not see lb1 alive at version %d: %+v", res.Version, last.Nodes)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if ms, err := a.client.Members(ctx()); err != nil || len(ms) != 3 {
			t.Errorf("restarted lb1's gossip members: %+v %v", ms, err)
		}
	})

	t.Run("without quorum writes fail fast and the survivor serves", func(t *testing.T) {
		b.stop(t)
		c.stop(t)
		start := time.Now()
		_, err := a.client.ApplyConfig(ctx(), webDoc(bk, 1), 0, time.Second)
		took := time.Since(start)
		if err == nil {
			t.Fatal("apply without quorum succeeded")
		}
		if !strings.Contains(err.Error(), "no quorum") {
			t.Errorf("apply without quorum: %v, want a message with \"no quorum\"", err)
		}
		if took > 10*time.Second {
			t.Errorf("apply without quorum took %v", took)
		}
		t.Logf("apply without quorum refused in %v: %v", took.Round(time.Millisecond), err)
		waitServes(t, "lone lb1", a.frontend(t), "app2")
		waitUntil(t, 5*time.Second, "status to show no quorum", func() bool {
			st := a.status(t)
			return !st.Quorum && slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "no quorum") })
		})
	})
}

// A write forwarded to a leader that lost its quorum (or its leadership)
// on the way is a no-quorum refusal on the admin API too, not a bad
// request.
func TestClusterErrorForwardedRefusals(t *testing.T) {
	for _, code := range []string{"no_quorum", "not_leader"} {
		err := fmt.Errorf("forward to the leader (10.0.0.11:7443): %w",
			&APIError{Status: http.StatusServiceUnavailable, Code: code, Message: "no quorum: 1 of 3 voters reachable"})
		ae := clusterError(err)
		if ae.Status != http.StatusServiceUnavailable || ae.Code != "no_quorum" || !strings.Contains(ae.Message, "forward to the leader") {
			t.Errorf("%s: %+v", code, ae)
		}
	}
	ae := clusterError(fmt.Errorf("wrapped: %w", &state.CommandError{Code: state.CodeStale, Message: "stale write"}))
	if ae.Status != http.StatusConflict || ae.Code != "stale" {
		t.Errorf("stale: %+v", ae)
	}
}
