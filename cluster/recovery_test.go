package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
)

// runAgent runs an Agent on cfg until the test ends or stop is called.
type runningAgent struct {
	a    *Agent
	stop func()
}

func runAgent(t *testing.T, cfg NodeConfig) *runningAgent {
	t.Helper()
	return runAgentWith(t, cfg, quietLog())
}

// runAgentWith starts an agent logging to log, with extra options.
func runAgentWith(t *testing.T, cfg NodeConfig, log *slog.Logger, opts ...AgentOption) *runningAgent {
	t.Helper()
	if err := os.WriteFile(cfg.ProxyConfig, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := NewAgent(cfg, log, append([]AgentOption{WithNotifier(NewNotifier("", quietLog()))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitUntil(t, 10*time.Second, "the agent to run", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.phase == phaseRunning
	})
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return &runningAgent{a: a, stop: stop}
}

func apiAddr(cfg NodeConfig) string { return "127.0.0.1:" + strconv.Itoa(cfg.Cluster.APIPort) }

func threeAgents(t *testing.T) []*runningAgent {
	t.Helper()
	ctx := context.Background()
	var ras []*runningAgent
	var cfgs []NodeConfig
	for _, name := range []string{"lb1", "lb2", "lb3"} {
		cfg := testNodeConfig(t, name)
		cfgs = append(cfgs, cfg)
		ras = append(ras, runAgent(t, cfg))
	}
	res, err := ras[0].a.ClusterInit(ctx)
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	if !strings.Contains(res.JoinCommand, "--token "+res.Token) {
		t.Errorf("join command %q lacks the token", res.JoinCommand)
	}
	for _, ra := range ras[1:] {
		if err := ra.a.ClusterJoin(ctx, apiAddr(cfgs[0]), res.Token); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	waitUntil(t, 10*time.Second, "three voters", func() bool { return ras[0].a.member.Load().node.voters() == 3 })
	return ras
}

// TestRecoverAfterQuorumLoss: two of three voters gone for good; the
// survivor refuses writes fast, keeps serving, and `recover --force`
// makes it a working one-node cluster again.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	ras := threeAgents(t)
	ctx := context.Background()
	if _, err := ras[0].a.ApplyConfig(ctx, "backends: [{name: app}]\n", 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	ras[1].stop()
	ras[2].stop()
	waitUntil(t, 15*time.Second, "lb1 to lose its leader", func() bool { return !ras[0].a.member.Load().node.hasLeader() })
	start := time.Now()
	_, err := ras[0].a.ApplyConfig(ctx, "backends: [{name: app2}]\n", 0, time.Second)
	if !errors.Is(err, ErrNoQuorum) || !strings.Contains(err.Error(), "voters reachable") {
		t.Fatalf("apply without quorum: %v, want a no-quorum error naming the reachable voters", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("apply without quorum took %v, want it to fail fast", d)
	}
	if err := ras[0].a.Recover(ctx, false); err == nil {
		t.Error("recover without --force went ahead")
	}
	if err := ras[0].a.Recover(ctx, true); err != nil {
		t.Fatalf("recover --force: %v", err)
	}
	res, err := ras[0].a.ApplyConfig(ctx, "backends: [{name: app3}]\n", 0, 5*time.Second)
	if err != nil {
		t.Fatalf("apply after recovery: %v", err)
	}
	if cv, _ := ras[0].a.ConfigVersion(0); cv.Version != res.Version || len(cv.Config.Backends) != 1 || cv.Config.Backends[0].Name != "app3" {
		t.Errorf("after recovery the current config is %+v", cv)
	}
}

// TestSnapshotSaveRestore: a saved state restored later brings the saved
// config back as the current one.
func TestSnapshotSaveRestore(t *testing.T) {
	ra := runAgent(t, testNodeConfig(t, "lb1"))
	ctx := context.Background()
	if _, err := ra.a.ClusterInit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.a.ApplyConfig(ctx, "backends: [{name: saved}]\n", 0, time.Second); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := ra.a.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if _, err := ra.a.ApplyConfig(ctx, "backends: [{name: later}]\n", 0, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ra.a.RestoreSnapshot(strings.NewReader("not a snapshot")); err == nil {
		t.Error("garbage was restored")
	}
	if err := ra.a.RestoreSnapshot(&snap); err != nil {
		t.Fatalf("restore: %v", err)
	}
	waitUntil(t, 5*time.Second, "the saved config to be current", func() bool {
		cv, err := ra.a.ConfigVersion(0)
		return err == nil && cv.Config != nil && len(cv.Config.Backends) == 1 && cv.Config.Backends[0].Name == "saved"
	})
}

// TestRemoteCLIWithOperatorCertificate: the admin API answers on the node
// API port to a client with an operator certificate, and to nobody else.
func TestRemoteCLIWithOperatorCertificate(t *testing.T) {
	cfg := testNodeConfig(t, "lb1")
	ra := runAgent(t, cfg)
	if _, err := ra.a.ClusterInit(context.Background()); err != nil {
		t.Fatal(err)
	}
	ic, err := ra.a.IssueCert("alice")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCAPEM([]byte(ic.CAPEM), ra.a.member.Load().node.tls.ca.Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.KeyPair([]byte(ic.CertPEM), []byte(ic.KeyPEM), []byte(ic.CAPEM))
	if err != nil {
		t.Fatal(err)
	}
	get := func(cfg *tls.Config) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		defer c.CloseIdleConnections()
		resp, err := c.Get("https://" + apiAddr(ra.a.cfg) + "/v1/cluster/status")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get(pki.ClientTLS(ca, cert, "", nil)); err != nil || st != 200 {
		t.Errorf("operator certificate: %d %v, want 200", st, err)
	}
	// The CLI's remote client (fulcrum --remote --cert --key --ca).
	dir := t.TempDir()
	for name, data := range map[string]string{"alice.crt": ic.CertPEM, "alice.key": ic.KeyPEM, "ca.crt": ic.CAPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := NewRemoteAdminClient(apiAddr(ra.a.cfg), filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key"), filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if st, err := rc.ClusterStatus(context.Background()); err != nil || !st.Clustered || st.Node != "lb1" {
		t.Errorf("remote cluster status: %+v %v", st, err)
	}
	nodeCert := ra.a.member.Load().node.tls.cert
	if st, err := get(pki.ClientTLS(ca, nodeCert, "", nil)); err == nil && st == 200 {
		t.Errorf("a node certificate reached the operator API")
	}
	if st, err := get(&tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS13}); err == nil && st == 200 {
		t.Errorf("a client without a certificate reached the admin API")
	}
}

// TestApplyRefusesKeysTheOldestNodeLacks: during a rolling upgrade a
// config that uses a key the oldest node's build does not know is
// refused, naming the key and the node.
func TestApplyRefusesKeysTheOldestNodeLacks(t *testing.T) {
	ras := threeAgents(t)
	// lb3 plays a build from before the vip section (schema level 1).
	n3 := ras[2].a.member.Load().node
	n3.metaMu.Lock()
	n3.meta.Schema = 1
	n3.metaMu.Unlock()
	n3.publishMeta()
	waitUntil(t, 5*time.Second, "lb1 to see lb3 at schema 1", func() bool {
		for _, m := range ras[0].a.member.Load().node.gossip.members() {
			if m.Name == "lb3" {
				return m.Meta.Schema == 1
			}
		}
		return false
	})
	ctx := context.Background()
	_, err := ras[0].a.ApplyConfig(ctx, "vip: {mode: none}\n", 0, time.Second)
	if err == nil || !strings.Contains(err.Error(), "uses vip (config schema 2)") || !strings.Contains(err.Error(), "lb3") {
		t.Fatalf("apply of a vip section with lb3 at schema 1: %v, want a refusal naming vip and lb3", err)
	}
	if _, err := ras[0].a.ApplyConfig(ctx, "backends: [{name: app}]\n", 0, time.Second); err != nil {
		t.Errorf("a config every node knows: %v", err)
	}
}

// TestWitnessKeepsQuorum: two voters and a witness survive the loss of
// either voter for writes, and the witness runs no proxy.
func TestWitnessKeepsQuorum(t *testing.T) {
	ctx := context.Background()
	cfgs := []NodeConfig{testNodeConfig(t, "lb1"), testNodeConfig(t, "lb2"), testNodeConfig(t, "wit")}
	cfgs[2].Node.Role = "witness"
	var ras []*runningAgent
	for _, c := range cfgs {
		ras = append(ras, runAgent(t, c))
	}
	res, err := ras[0].a.ClusterInit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ra := range ras[1:] {
		if err := ra.a.ClusterJoin(ctx, apiAddr(cfgs[0]), res.Token); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "three voters", func() bool { return ras[0].a.member.Load().node.voters() == 3 })
	doc := "frontends: [{name: web, bind: [\"127.0.0.1:0\"], default_backend: app}]\nbackends: [{name: app}]\n"
	if _, err := ras[0].a.ApplyConfig(ctx, doc, 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if addrs := ras[2].a.engine.Load().Addrs(); len(addrs) != 0 {
		t.Errorf("the witness runs a proxy: listeners %v", addrs)
	}
	if addrs := ras[1].a.engine.Load().Addrs(); len(addrs) != 1 {
		t.Errorf("voter lb2 has listeners %v, want the web frontend", addrs)
	}
	ras[1].stop() // lose a voter
	waitUntil(t, 15*time.Second, "a leader among lb1 and the witness", func() bool {
		return ras[0].a.member.Load().node.hasLeader() && ras[2].a.member.Load().node.hasLeader()
	})
	if _, err := ras[0].a.ApplyConfig(ctx, "backends: [{name: app2}]\n", 0, time.Second); err != nil {
		t.Errorf("write with one voter lost (two voters and a witness): %v", err)
	}
}

// TestClusteredSIGHUPReadsNodeConfigOnly: a clustered node's reload
// re-reads the node config (refusing a broken one) and never the proxy
// config file.
func TestClusteredSIGHUPReadsNodeConfigOnly(t *testing.T) {
	cfg := testNodeConfig(t, "lb1")
	cfg.File = filepath.Join(filepath.Dir(cfg.ProxyConfig), "node.yaml")
	if err := os.WriteFile(cfg.File, []byte("node: {name: lb1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ra := runAgent(t, cfg)
	if _, err := ra.a.ClusterInit(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A proxy config file that would not even parse: ignored when clustered.
	os.WriteFile(cfg.ProxyConfig, []byte("frontends: [{name: x}]\n"), 0o644)
	if err := ra.a.Reload(); err != nil {
		t.Errorf("clustered reload with a valid node config: %v", err)
	}
	os.WriteFile(cfg.File, []byte("node: {nmae: typo}\n"), 0o644)
	if err := ra.a.Reload(); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("clustered reload with a broken node config: %v, want a refusal naming the key", err)
	}
}
