package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/state"
	"github.com/fulcrum-lb/fulcrum/test/ports"
)

func testNodeConfig(t *testing.T, name string) NodeConfig {
	t.Helper()
	dir, err := os.MkdirTemp("", "fulcrum-node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := ports.Loopback(t, 3)
	return NodeConfig{
		Node:        NodeSection{Name: name, DataDir: filepath.Join(dir, "data"), Role: "voter"},
		Admin:       AdminSection{Socket: filepath.Join(dir, "admin.sock")},
		ProxyConfig: filepath.Join(dir, "lb.yaml"),
		Log:         LogSection{Level: "info", Format: "text"},
		Cluster:     ClusterSection{BindAddr: "127.0.0.1", RaftPort: p[0], GossipPort: p[1], APIPort: p[2]},
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions() nodeOptions { return defaultNodeOptions() }

// waitUntil polls cond up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testMember struct {
	cfg   NodeConfig
	store *state.Store
	node  *Node
}

// threeNodes forms a cluster of three in-process nodes with the real init
// and join flows, over TLS on loopback.
func threeNodes(t *testing.T) []*testMember {
	t.Helper()
	ctx := context.Background()
	var ms []*testMember
	for i := range 3 {
		ms = append(ms, &testMember{cfg: testNodeConfig(t, fmt.Sprintf("lb%d", i+1)), store: state.NewStore()})
	}
	n, token, err := initCluster(ctx, ms[0].cfg, quietLog(), "test", ms[0].store, testOptions())
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	ms[0].node = n
	seed := "127.0.0.1:" + strconv.Itoa(ms[0].cfg.Cluster.APIPort)
	for _, m := range ms[1:] {
		n, err := joinCluster(ctx, m.cfg, quietLog(), "test", seed, token, m.store, testOptions())
		if err != nil {
			t.Fatalf("join %s: %v", m.cfg.Node.Name, err)
		}
		m.node = n
	}
	t.Cleanup(func() {
		for _, m := range ms {
			if m.node != nil {
				m.node.close()
			}
		}
	})
	waitUntil(t, 10*time.Second, "3 voters", func() bool { return ms[0].node.voters() == 3 })
	return ms
}

func TestClusterInitJoinAndReplicate(t *testing.T) {
	ms := threeNodes(t)
	doc := "backends: [{name: app, servers: [{name: a, address: \"127.0.0.1:9001\"}]}]\n"
	// A write through a follower is forwarded to the leader.
	follower := ms[1].node
	if follower.isLeader() {
		follower = ms[2].node
	}
	res, err := follower.propose(context.Background(), &state.ApplyConfig{YAML: doc, Origin: "test", Time: time.Now()})
	if err != nil {
		t.Fatalf("apply through a follower: %v", err)
	}
	if res.Version != 1 {
		t.Errorf("first config version %d, want 1", res.Version)
	}
	for _, m := range ms {
		waitUntil(t, 5*time.Second, m.cfg.Node.Name+" to hold version 1", func() bool {
			cv, ok := m.store.Current()
			return ok && cv.Version == 1 && cv.YAML == doc
		})
	}
	// An invalid document is refused with its faults, and nothing changes.
	_, err = ms[0].node.propose(context.Background(), &state.ApplyConfig{YAML: "frontends: [{name: f}]\n", Origin: "test", Time: time.Now()})
	var ce *state.CommandError
	if !errors.As(err, &ce) || len(ce.Faults) == 0 {
		t.Fatalf("invalid config: got %v, want a CommandError with faults", err)
	}
	if cv, _ := ms[2].store.Current(); cv.Version != 1 {
		t.Errorf("after a refused apply the version is %d, want 1", cv.Version)
	}
	if n := len(ms[0].store.Nodes()); n != 3 {
		t.Errorf("store knows %d nodes, want 3", n)
	}
}

// TestLeaderFailover kills the leader and measures how long the others
// take to elect a new one; writes then continue.
func TestLeaderFailover(t *testing.T) {
	ms := threeNodes(t)
	var leader *testMember
	for _, m := range ms {
		if m.node.isLeader() {
			leader = m
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	start := time.Now()
	// Shut Raft and gossip down abruptly (no leadership transfer): a crash.
	leader.node.raft.close()
	leader.node.gossip.ml.Shutdown()
	leader.node.api.close()
	close(leader.node.stop)
	leader.node.wg.Wait()
	leader.node = nil
	var next *testMember
	waitUntil(t, 10*time.Second, "a new leader", func() bool {
		for _, m := range ms {
			if m.node != nil && m.node.isLeader() {
				next = m
				return true
			}
		}
		return false
	})
	t.Logf("new leader %s elected %v after the old one died", next.cfg.Node.Name, time.Since(start).Round(time.Millisecond))
	doc := "backends: [{name: b, servers: []}]\n"
	if _, err := next.node.propose(context.Background(), &state.ApplyConfig{YAML: doc, Origin: "test", Time: time.Now()}); err != nil {
		t.Fatalf("write after failover: %v", err)
	}
}

func TestJoinWithWrongTokenIsRefused(t *testing.T) {
	ctx := context.Background()
	a := &testMember{cfg: testNodeConfig(t, "lb1"), store: state.NewStore()}
	n, token, err := initCluster(ctx, a.cfg, quietLog(), "test", a.store, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	// Same CA pin, another secret: the proof fails.
	forged := []byte(token)
	i := len("fulcrum1.")
	if forged[i] == 'A' {
		forged[i] = 'B'
	} else {
		forged[i] = 'A'
	}
	b := testNodeConfig(t, "lb2")
	_, err = joinCluster(ctx, b, quietLog(), "test", "127.0.0.1:"+strconv.Itoa(a.cfg.Cluster.APIPort), string(forged), state.NewStore(), testOptions())
	if err == nil {
		t.Fatal("a joiner with a forged token was admitted")
	}
	if _, ok, _ := loadRecord(b.Node.DataDir); ok {
		t.Error("a refused joiner recorded itself as clustered")
	}
	if n.voters() != 1 {
		t.Errorf("voters %d after a refused join, want 1", n.voters())
	}
}

// TestRemovedNodeCertificateRefused: once a node is removed its
// certificate is on the deny list, and every handshake with it fails;
// a process without a cluster certificate is refused on the Raft port.
func TestRemovedNodeCertificateRefused(t *testing.T) {
	ms := threeNodes(t)
	gone := ms[2]
	nd, ok := ms[0].store.View().Node(gone.cfg.Node.Name)
	if !ok || nd.Serial == "" {
		t.Fatalf("node %s has no recorded certificate serial: %+v", gone.cfg.Node.Name, nd)
	}
	dial := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", ms[0].cfg.Cluster.RaftAddr(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if isTimeoutErr(err) {
			return nil // accepted: the server is waiting for Raft traffic
		}
		return err
	}
	client := pki.ClientTLS(gone.node.tls.pool, gone.node.tls.cert, "", nil)
	if err := dial(client); err != nil {
		t.Fatalf("a member's certificate was refused before removal: %v", err)
	}
	if err := dial(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}); err == nil {
		t.Error("a client without a cluster certificate was accepted on the Raft port")
	}
	// The node API refuses its internal endpoints to a client without a
	// node certificate (only the join, proved by the token, is open).
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ms[0].node.tls.pool, MinVersion: tls.VersionTLS13}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("https://"+ms[0].cfg.Cluster.APIAddr()+"/v1/internal/apply", "application/octet-stream", strings.NewReader("x"))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("internal apply without a certificate: HTTP %d, want 403", resp.StatusCode)
		}
	}
	ctx := context.Background()
	if _, err := ms[0].node.propose(ctx, &state.RevokeCert{Serial: nd.Serial, Node: nd.Name}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the revocation to reach lb1", func() bool { return ms[0].store.Revoked(nd.Serial) })
	if err := dial(client); err == nil {
		t.Error("a revoked certificate was accepted on the Raft port")
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
