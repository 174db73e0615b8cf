package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// Fulcrum: three agents formed into a cluster with the real CLI, the
// replicated config holding an active-passive VIP (GARP burst 3, 100 ms
// apart) and a frontend on 0.0.0.0:8080 that forwards to the node's own
// demo backend on 127.0.0.1:9001, which answers with the node's name.
// Timers are the agent's defaults.

type fnode struct {
	name  string
	host  *netlab.Host
	cfg   string
	agent *netlab.Proc
}

type fulcrum struct {
	b     *bench
	bin   string
	dir   string
	nodes []*fnode
}

func newFulcrum(t *testing.T, b *bench, bin string) *fulcrum {
	f := &fulcrum{b: b, bin: bin, dir: t.TempDir()}
	for i, h := range b.lab.Nodes() {
		n := &fnode{name: b.names[i], host: h}
		nd := filepath.Join(f.dir, n.name)
		n.cfg = filepath.Join(nd, "node.yaml")
		if err := os.MkdirAll(nd, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf("node: {name: %s, data_dir: %s}\nadmin: {socket: %s}\nproxy_config: %s\ncluster: {bind_addr: %s}\nvip: {interface: eth0}\n",
			n.name, filepath.Join(nd, "data"), filepath.Join(nd, "admin.sock"), filepath.Join(nd, "lb.yaml"), h.Addr())
		if err := os.WriteFile(n.cfg, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		b.lab.Start(h, nil, bin, "demo-backend", "--listen", "127.0.0.1:9001", "--name", n.name)
		f.nodes = append(f.nodes, n)
	}
	for _, n := range f.nodes {
		f.start(t, n)
	}
	out, err := f.cli(f.nodes[0], "cluster", "init", "--json")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	var ini struct {
		Token string `json:"token"`
	}
	if err := decode(out, &ini); err != nil || ini.Token == "" {
		t.Fatalf("cluster init --json: %v\n%s", err, out)
	}
	for _, n := range f.nodes[1:] {
		if out, err := f.cli(n, "cluster", "join", f.nodes[0].host.Addr().String(), "--token", ini.Token); err != nil {
			t.Fatalf("%s: cluster join: %v\n%s", n.name, err, out)
		}
	}
	f.waitAlive(t)
	lb := filepath.Join(f.dir, "lb.yaml")
	doc := fmt.Sprintf(`global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: local, address: "127.0.0.1:9001"}
vip:
  mode: active-passive
  addresses: ["%s/24"]
  garp: {burst: 3, interval: 100ms, refresh: 10s}
`, b.lab.VIP())
	if err := os.WriteFile(lb, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := f.cli(f.nodes[0], "config", "apply", "-f", lb); err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	return f
}

func decode(out string, v any) error {
	i := strings.IndexAny(out, "{[")
	if i < 0 {
		return fmt.Errorf("no JSON in %q", out)
	}
	return json.Unmarshal([]byte(out[i:]), v)
}

func (f *fulcrum) cli(n *fnode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return f.b.lab.Exec(ctx, n.host, append([]string{f.bin}, append(args, "--config", n.cfg)...)...)
}

type fstatus struct {
	Leader string `json:"leader"`
	Quorum bool   `json:"quorum"`
	Nodes  []struct {
		Name   string `json:"name"`
		Gossip string `json:"gossip"`
	} `json:"nodes"`
}

func (f *fulcrum) status(n *fnode) (fstatus, error) {
	var st fstatus
	out, err := f.cli(n, "cluster", "status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	return st, decode(out, &st)
}

// start starts n's agent and waits until its admin socket answers.
func (f *fulcrum) start(t *testing.T, n *fnode) {
	t.Helper()
	n.agent = f.b.lab.Start(n.host, nil, f.bin, "agent", "--config", n.cfg)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := f.status(n); err == nil {
			return
		}
		if n.agent.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s's agent did not come up:\n%s", n.name, n.agent.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAlive waits until every node sees a quorum and all three alive.
func (f *fulcrum) waitAlive(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, n := range f.nodes {
			st, err := f.status(n)
			alive := 0
			for _, m := range st.Nodes {
				if m.Gossip == "alive" {
					alive++
				}
			}
			if err != nil || !st.Quorum || alive != len(f.nodes) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the cluster did not see all three nodes alive with a quorum within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fulcrum) pull(t *testing.T, i int, sc scenario) {
	n := f.nodes[i]
	switch sc {
	case killAll:
		f.b.smp.exclude(i)
		if err := n.agent.Kill(); err != nil {
			t.Fatal(err)
		}
	case cablePull:
		if err := f.b.lab.Cable(n.host, false); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("fulcrum: no scenario %q", sc)
	}
}

func (f *fulcrum) restore(t *testing.T, i int, sc scenario) {
	n := f.nodes[i]
	switch sc {
	case killAll:
		if err := n.agent.WaitTimeout(5 * time.Second); err == nil {
			t.Fatalf("%s's agent exited cleanly after SIGKILL?", n.name)
		}
		f.b.smp.excludeUntilDrop(i)
		start := time.Now()
		f.start(t, n)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if at, ok := f.b.smp.dropped(i); ok {
				t.Logf("  %s restarted: stale VIP gone from its eth0 %v after the restart", n.name, ms(at.Sub(start)))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's restarted agent did not drop the stale VIP within 10 s", n.name)
			}
		}
	case cablePull:
		if h, err := f.b.smp.holdsNow(i); err != nil || h {
			t.Errorf("the cut-off %s still holds the VIP (%v)", n.name, err)
		}
		if err := f.b.lab.Cable(n.host, true); err != nil {
			t.Fatal(err)
		}
	}
	f.waitAlive(t)
}
