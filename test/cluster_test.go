package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// hitCounter is a backend served by the test process inside a lab
// namespace: it answers with its name and counts requests per source
// address, so a test can tell which node sent each one.
type hitCounter struct {
	name string
	mu   sync.Mutex
	from map[string]int
}

func (h *hitCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	h.mu.Lock()
	h.from[host]++
	h.mu.Unlock()
	io.WriteString(w, h.name+"\n")
}

func (h *hitCounter) counts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.from))
	for k, v := range h.from {
		out[k] = v
	}
	return out
}

// clusterStatusJSON is the part of `cluster status --json` the test reads:
// the fields scripts may rely on.
type clusterStatusJSON struct {
	Leader        string           `json:"leader"`
	Term          uint64           `json:"term"`
	Quorum        bool             `json:"quorum"`
	Nodes         []nodeStatusJSON `json:"nodes"`
	ConfigVersion uint64           `json:"config_version"`
	Warnings      []string         `json:"warnings"`
}

type nodeStatusJSON struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Gossip  string `json:"gossip"`
	Raft    string `json:"raft"`
	Applied uint64 `json:"applied_config_version"`
	VIP     *struct {
		Since        time.Time `json:"since"`
		LastAnnounce time.Time `json:"last_announce"`
	} `json:"vip"`
}

// newLBNodes writes the node configs of lb1..lbN (lbI on lab.Node(I))
// under dir, each with extra appended (a vip section, say).
func newLBNodes(t *testing.T, lab *netlab.Lab, dir string, count int, extra string) []*lbNode {
	var nodes []*lbNode
	for i := 1; i <= count; i++ {
		n := &lbNode{name: fmt.Sprintf("lb%d", i), host: lab.Node(i)}
		nd := filepath.Join(dir, n.name)
		n.nodePath = filepath.Join(nd, "node.yaml")
		writeFileAll(t, n.nodePath, fmt.Sprintf(
			"node: {name: %s, data_dir: %s}\nadmin: {socket: %s}\nproxy_config: %s\ncluster: {bind_addr: %s}\n%s",
			n.name, filepath.Join(nd, "data"), filepath.Join(nd, "admin.sock"), filepath.Join(nd, "lb.yaml"), n.host.Addr(), extra))
		nodes = append(nodes, n)
	}
	return nodes
}

// lbNode is one clustered agent in the lab.
type lbNode struct {
	name     string
	host     *netlab.Host
	nodePath string
	agent    *netlab.Proc
}

// decodeJSON decodes the JSON value in a command's output.
// checkApplied reads the output of `config apply --json` and checks that
// every node in names reports the committed version applied (why: what a
// refusal would mean). It returns the version.
func checkApplied(t *testing.T, out string, names []string, why string) uint64 {
	t.Helper()
	var ap struct {
		Version uint64            `json:"version"`
		Applied map[string]uint64 `json:"applied"`
	}
	decodeJSON(t, "config apply --json", out, &ap)
	for _, name := range names {
		if ap.Applied[name] != ap.Version {
			t.Errorf("apply: %s at %d, want %d (%s): %s", name, ap.Applied[name], ap.Version, why, out)
		}
	}
	return ap.Version
}

func decodeJSON(t *testing.T, what, out string, v any) {
	t.Helper()
	i := strings.IndexAny(out, "{[")
	if i < 0 {
		t.Fatalf("%s: no JSON in output:\n%s", what, out)
	}
	if err := json.Unmarshal([]byte(out[i:]), v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
}

// TestClusterInNamespaces forms a three-node cluster in three network
// namespaces with the real CLI, then: config propagation to every node's
// data plane (timed), the leader killed and a new one elected (timed),
// writes after failover, the killed node restarted and caught up, and a
// drain obeyed by every node. The backends run in a fourth namespace.
func TestClusterInNamespaces(t *testing.T) {
	netlab.Require(t)
	bin := binary(t)
	lab, err := netlab.New(t, netlab.Options{Prefix: "fc", Nodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	client := lab.HTTPClient(lab.Client())
	client.Transport.(*http.Transport).DisableKeepAlives = true
	bh := lab.Node(4)
	backends := []*hitCounter{{name: "app1", from: map[string]int{}}, {name: "app2", from: map[string]int{}}}
	for i, h := range backends {
		ln, err := lab.Listen(bh, "tcp4", bh.HostPort(uint16(9001+i)))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}

	dir := t.TempDir()
	nodes := newLBNodes(t, lab, dir, 3, "")
	cli := func(n *lbNode, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return lab.Exec(ctx, n.host, append([]string{bin}, append(args, "--config", n.nodePath)...)...)
	}
	status := func(n *lbNode) (clusterStatusJSON, error) {
		var st clusterStatusJSON
		out, err := cli(n, "cluster", "status", "--json")
		if err != nil {
			return st, err
		}
		return st, json.Unmarshal([]byte(out), &st)
	}
	startAgent := func(n *lbNode) {
		n.agent = lab.Start(n.host, nil, bin, "agent", "--config", n.nodePath)
		waitFor(t, 15*time.Second, n.name+"'s agent", func() bool {
			_, err := status(n)
			return err == nil || n.agent.Exited()
		})
		if n.agent.Exited() {
			t.Fatalf("%s's agent exited:\n%s", n.name, n.agent.Output())
		}
	}
	for _, n := range nodes {
		startAgent(n)
	}

	// Standalone, the cluster's config commands point at cluster init; an
	// invalid file is refused before anything is sent.
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	writeFile(t, good, "backends: [{name: app, servers: []}]\n")
	writeFile(t, bad, "frontends: [{name: web, bind: [oops]}]\n")
	for _, args := range [][]string{{"config", "apply", "-f", good}, {"config", "history"}, {"config", "rollback", "1"}} {
		out, err := cli(nodes[1], args...)
		if err == nil || !strings.Contains(out, "fulcrum cluster init") || !strings.HasPrefix(out, "fulcrum: ") {
			t.Errorf("standalone %v: %v\n%s", args, err, out)
		}
	}
	out, err := cli(nodes[1], "config", "apply", "-f", bad)
	for _, want := range []string{"frontends[0].bind[0]: missing port\n", "frontends[0].default_backend: missing\n", "invalid, 2 fault(s); nothing was applied"} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("apply of an invalid file: %v, output lacks %q:\n%s", err, want, out)
		}
	}

	// Form the cluster with the real commands.
	out, err = cli(nodes[0], "cluster", "init", "--json")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	var ini struct {
		Token       string `json:"token"`
		JoinCommand string `json:"join_command"`
	}
	decodeJSON(t, "cluster init --json", out, &ini)
	if want := "fulcrum cluster join " + nodes[0].host.HostPort(7443) + " --token " + ini.Token; ini.Token == "" || ini.JoinCommand != want {
		t.Errorf("init: %+v, want join command %q", ini, want)
	}
	for _, n := range nodes[1:] {
		out, err := cli(n, "cluster", "join", nodes[0].host.Addr().String(), "--token", ini.Token)
		if err != nil || !strings.Contains(out, "joined the cluster through") {
			t.Fatalf("%s: cluster join: %v\n%s", n.name, err, out)
		}
	}
	waitFor(t, 15*time.Second, "three live nodes", func() bool {
		st, err := status(nodes[2])
		if err != nil || !st.Quorum || len(st.Nodes) != 3 {
			return false
		}
		for _, ns := range st.Nodes {
			if ns.Gossip != "alive" {
				return false
			}
		}
		return true
	})

	// A config with a frontend on 0.0.0.0:8080: each node serves it on its
	// own address.
	lbPath := filepath.Join(dir, "lb.yaml")
	doc := func(weight2 int) string {
		return fmt.Sprintf(`global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: %q}
      - {name: app2, address: %q, weight: %d}
`, bh.HostPort(9001), bh.HostPort(9002), weight2)
	}
	writeFile(t, lbPath, doc(1))
	start := time.Now()
	out, err = cli(nodes[1], "config", "apply", "-f", lbPath, "--json")
	committed := time.Since(start)
	if err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.name)
	}
	version := checkApplied(t, out, names, "every node is up")
	for _, n := range nodes {
		url := "http://" + n.host.HostPort(8080) + "/"
		waitFor(t, 10*time.Second, n.name+" to serve the applied config", func() bool {
			st, _, err := get(client, url)
			return err == nil && st == 200
		})
	}
	t.Logf("config version %d: committed and reported applied by every node in %v (CLI round trip), served by all 3 data planes after %v",
		version, committed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for _, n := range nodes {
		seen := map[string]int{}
		for range 10 {
			st, body, err := get(client, "http://"+n.host.HostPort(8080)+"/")
			if err != nil || st != 200 {
				t.Fatalf("GET via %s: %d %v", n.name, st, err)
			}
			seen[body]++
		}
		if seen["app1"] == 0 || seen["app2"] == 0 {
			t.Errorf("via %s: %v, want both backends", n.name, seen)
		}
	}

	// Kill the leader's agent: a new leader, and writes continue.
	st, err := status(nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	var leader *lbNode
	var survivors []*lbNode
	for _, n := range nodes {
		if n.name == st.Leader {
			leader = n
		} else {
			survivors = append(survivors, n)
		}
	}
	if leader == nil {
		t.Fatalf("no leader in %+v", st)
	}
	leader.agent.Kill()
	killed := time.Now()
	var next string
	waitFor(t, 15*time.Second, "a new leader", func() bool {
		st, err := status(survivors[0])
		next = st.Leader
		return err == nil && st.Leader != "" && st.Leader != leader.name
	})
	elected := time.Since(killed)
	t.Logf("leader %s killed: %s leads %v later (as seen by %s's CLI)", leader.name, next, elected.Round(time.Millisecond), survivors[0].name)
	if elected > 5*time.Second {
		t.Errorf("a new leader took %v", elected)
	}
	writeFile(t, lbPath, doc(2))
	out, err = cli(survivors[1], "config", "apply", "-f", lbPath)
	if err != nil {
		t.Fatalf("config apply after failover: %v\n%s", err, out)
	}
	latest := version + 1
	for _, want := range []string{fmt.Sprintf("config version %d applied on", latest), survivors[0].name, survivors[1].name} {
		if !strings.Contains(out, want) {
			t.Errorf("apply after failover printed %q, want it to contain %q", out, want)
		}
	}

	// Restart the killed node: it rejoins with its state and catches up.
	// A real restart (a reboot) outlasts failure detection: let the others
	// declare the killed node dead first.
	waitFor(t, 10*time.Second, survivors[0].name+" to declare "+leader.name+" dead", func() bool {
		st, err := status(survivors[0])
		return err == nil && slices.ContainsFunc(st.Nodes, func(ns nodeStatusJSON) bool {
			return ns.Name == leader.name && ns.Gossip == "dead"
		})
	})
	startAgent(leader)
	// Through Raft, the restarted node catches up by itself.
	var own clusterStatusJSON
	waitFor(t, 15*time.Second, "restarted "+leader.name+" to catch up", func() bool {
		st, err := status(leader)
		own = st
		if err != nil || st.ConfigVersion != latest || len(st.Nodes) != 3 {
			return false
		}
		for _, ns := range st.Nodes {
			if ns.Name == leader.name {
				return ns.Applied == latest
			}
		}
		return false
	})
	t.Logf("restarted %s runs version %d; its status: leader %s, quorum %v", leader.name, latest, own.Leader, own.Quorum)
	// And the others see it back, alive and at the latest version. (Not
	// fatal: the drain below does not depend on it.)
	var last clusterStatusJSON
	seen := func() bool {
		st, err := status(survivors[0])
		if err != nil {
			return false
		}
		last = st
		for _, ns := range st.Nodes {
			if ns.Name == leader.name {
				return ns.Gossip == "alive" && ns.Applied == latest
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); !seen(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("%s does not see the restarted %s alive at version %d after 10s: %+v", survivors[0].name, leader.name, latest, last)
			break
		}
	}
	waitFor(t, 10*time.Second, "restarted "+leader.name+" to serve", func() bool {
		st, _, err := get(client, "http://"+leader.host.HostPort(8080)+"/")
		return err == nil && st == 200
	})

	// Drain app1 on one node: no node sends it new requests.
	out, err = cli(nodes[2], "server", "drain", "app/app1")
	if err != nil {
		t.Fatalf("server drain: %v\n%s", err, out)
	}
	for _, n := range nodes {
		url := "http://" + n.host.HostPort(8080) + "/"
		waitFor(t, 5*time.Second, n.name+" to obey the drain", func() bool {
			for range 5 {
				if _, body, err := get(client, url); err != nil || body != "app2" {
					return false
				}
			}
			return true
		})
	}
	before := backends[0].counts()
	for _, n := range nodes {
		for range 20 {
			if st, body, err := get(client, "http://"+n.host.HostPort(8080)+"/"); err != nil || st != 200 || body != "app2" {
				t.Errorf("via %s with app1 drained: %d %q %v", n.name, st, body, err)
			}
		}
	}
	after := backends[0].counts()
	for _, n := range nodes {
		a := n.host.Addr().String()
		if after[a] != before[a] {
			t.Errorf("%s sent app1 %d new requests while it was drained", n.name, after[a]-before[a])
		}
	}

	// History, show, diff and rollback through the CLI.
	out, err = cli(nodes[2], "config", "history")
	if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, "import") || !strings.Contains(out, fmt.Sprintf("%d *", latest)) {
		t.Errorf("config history: %v\n%s", err, out)
	}
	out, err = cli(nodes[2], "config", "show", "--version", fmt.Sprint(version))
	if err != nil || out != doc(1) {
		t.Errorf("config show --version %d: %v\n%s", version, err, out)
	}
	out, err = cli(nodes[2], "config", "diff", fmt.Sprint(version), fmt.Sprint(latest))
	if err != nil || !strings.Contains(out, "-      - {name: app2") || !strings.Contains(out, "weight: 2}") {
		t.Errorf("config diff: %v\n%s", err, out)
	}
	out, err = cli(nodes[2], "config", "rollback", fmt.Sprint(version), "--json")
	var rb struct {
		Version uint64            `json:"version"`
		Applied map[string]uint64 `json:"applied"`
	}
	if err != nil {
		t.Errorf("config rollback: %v\n%s", err, out)
	} else if decodeJSON(t, "config rollback --json", out, &rb); rb.Version != latest+1 || rb.Applied[nodes[2].name] != latest+1 {
		t.Errorf("config rollback: %s", out)
	}
	out, err = cli(nodes[2], "cluster", "status")
	if err != nil || !strings.Contains(out, "quorum yes") || !strings.Contains(out, "lb3 *") {
		t.Errorf("cluster status: %v\n%s", err, out)
	}
	t.Logf("cluster status on lb3:\n%s", out)
}

// writeFileAll is writeFile, creating the directory first.
func writeFileAll(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, data)
}
