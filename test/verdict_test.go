package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// TestVerdictAgreement: the nodes agree on server health. A server that
// one node alone cannot reach stays UP on the others, and status names
// the node that disagrees; a server that a majority sees DOWN is taken
// out on every node.
func TestVerdictAgreement(t *testing.T) {
	netlab.Require(t)
	bin := binary(t)
	lab, err := netlab.New(t, netlab.Options{Prefix: "fv", Nodes: 4})
	if err != nil {
		t.Fatal(err)
	}
	// app1 lives in n4's namespace, app2 in the client's: lb3 will lose
	// its route to n4 only.
	app1Host, app2Host := lab.Node(4), lab.Client()
	app1 := &hitCounter{name: "app1", from: map[string]int{}}
	app2 := &hitCounter{name: "app2", from: map[string]int{}}
	ln1, err := lab.Listen(app1Host, "tcp4", app1Host.HostPort(9001))
	if err != nil {
		t.Fatal(err)
	}
	srv1 := &http.Server{Handler: app1, ReadHeaderTimeout: 5 * time.Second}
	go srv1.Serve(ln1)
	t.Cleanup(func() { srv1.Close() })
	ln2, err := lab.Listen(app2Host, "tcp4", app2Host.HostPort(9002))
	if err != nil {
		t.Fatal(err)
	}
	srv2 := &http.Server{Handler: app2, ReadHeaderTimeout: 5 * time.Second}
	go srv2.Serve(ln2)
	t.Cleanup(func() { srv2.Close() })

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
	for _, n := range nodes {
		n.agent = lab.Start(n.host, nil, bin, "agent", "--config", n.nodePath)
		waitFor(t, 15*time.Second, n.name+"'s agent", func() bool { _, err := status(n); return err == nil })
	}
	out, err := cli(nodes[0], "cluster", "init", "--json")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	var ini struct {
		Token string `json:"token"`
	}
	decodeJSON(t, "cluster init", out, &ini)
	for _, n := range nodes[1:] {
		if out, err := cli(n, "cluster", "join", nodes[0].host.Addr().String(), "--token", ini.Token); err != nil {
			t.Fatalf("%s join: %v\n%s", n.name, err, out)
		}
	}
	waitFor(t, 15*time.Second, "three voters with quorum", func() bool {
		st, err := status(nodes[2])
		return err == nil && st.Quorum && len(st.Nodes) == 3
	})
	lbPath := filepath.Join(dir, "lb.yaml")
	cfgBody := fmt.Sprintf(`defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 500ms, server: 2s}}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
backends:
  - name: app
    health_check: {type: tcp, interval: 200ms, rise: 1, fall: 1}
    servers:
      - {name: app1, address: %q, check: true}
      - {name: app2, address: %q, check: true}
`, app1Host.HostPort(9001), app2Host.HostPort(9002))
	writeFile(t, lbPath, cfgBody)
	if out, err := cli(nodes[0], "config", "apply", "-f", lbPath); err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	serverStatus := func(n *lbNode, server string) string {
		out, err := cli(n, "stats", "--json")
		if err != nil {
			return ""
		}
		var st struct {
			Backends []struct {
				Servers []struct {
					Name   string `json:"name"`
					Status string `json:"status"`
				} `json:"servers"`
			} `json:"backends"`
		}
		if json.Unmarshal([]byte(out), &st) != nil || len(st.Backends) == 0 {
			return ""
		}
		for _, s := range st.Backends[0].Servers {
			if s.Name == server {
				return s.Status
			}
		}
		return ""
	}
	for _, n := range nodes {
		waitFor(t, 15*time.Second, n.name+" to see app1 and app2 UP", func() bool {
			return serverStatus(n, "app1") == "UP" && serverStatus(n, "app2") == "UP"
		})
	}

	// lb3 alone loses its route to app1.
	ctx := context.Background()
	if out, err := lab.Exec(ctx, nodes[2].host, "ip", "route", "add", "blackhole", app1Host.Addr().String()+"/32"); err != nil {
		t.Fatalf("blackhole route: %v\n%s", err, out)
	}
	waitFor(t, 15*time.Second, "lb3's status to name its disagreement", func() bool {
		st, err := status(nodes[2])
		if err != nil {
			return false
		}
		for _, w := range st.Warnings {
			if strings.Contains(w, "lb3 sees app/app1 DOWN") {
				return true
			}
		}
		return false
	})
	// Every node, lb3 included, uses the agreed verdict: app1 stays UP.
	for _, n := range nodes {
		if s := serverStatus(n, "app1"); s != "UP" {
			t.Errorf("%s: app1 is %s while only lb3 cannot reach it, want UP (the majority's verdict)", n.name, s)
		}
	}
	// lb1 and lb2 still send traffic to app1.
	client := lab.HTTPClient(lab.Client())
	client.Transport.(*http.Transport).DisableKeepAlives = true
	before := app1.counts()[nodes[0].host.Addr().String()]
	for range 10 {
		if st, _, err := get(client, "http://"+nodes[0].host.HostPort(8080)+"/"); err != nil || st != 200 {
			t.Fatalf("request through lb1: %d %v", st, err)
		}
	}
	if got := app1.counts()[nodes[0].host.Addr().String()] - before; got == 0 {
		t.Errorf("lb1 sent none of 10 requests to app1, which the cluster's verdict calls UP")
	}

	// lb3 avoids app1 by itself: its failed connects redispatch to app2.
	for range 10 {
		if st, _, err := get(client, "http://"+nodes[2].host.HostPort(8080)+"/"); err != nil || st != 200 {
			t.Errorf("request through lb3, which cannot reach app1: %d %v", st, err)
		}
	}

	// With `health_verdict: all` a server is UP only if every live voter
	// sees it UP: lb3's view now takes app1 out everywhere.
	writeFile(t, lbPath, "global: {health_verdict: all}\n"+cfgBody)
	if out, err := cli(nodes[0], "config", "apply", "-f", lbPath); err != nil {
		t.Fatalf("config apply (all): %v\n%s", err, out)
	}
	for _, n := range nodes {
		waitFor(t, 15*time.Second, n.name+" to take app1 out under health_verdict: all", func() bool { return serverStatus(n, "app1") == "DOWN" })
	}
	writeFile(t, lbPath, cfgBody)
	if out, err := cli(nodes[0], "config", "apply", "-f", lbPath); err != nil {
		t.Fatalf("config apply (majority again): %v\n%s", err, out)
	}
	for _, n := range nodes {
		waitFor(t, 15*time.Second, n.name+" to bring app1 back under majority", func() bool { return serverStatus(n, "app1") == "UP" })
	}

	// app1 goes away for everyone: the majority sees it DOWN, every node
	// takes it out.
	srv1.Close()
	for _, n := range nodes {
		waitFor(t, 15*time.Second, n.name+" to take app1 out", func() bool { return serverStatus(n, "app1") == "DOWN" })
	}
	before = app1.counts()[nodes[1].host.Addr().String()]
	for range 10 {
		if st, _, err := get(client, "http://"+nodes[1].host.HostPort(8080)+"/"); err != nil || st != 200 {
			t.Errorf("request through lb2 with app1 down: %d %v", st, err)
		}
	}
	if got := app1.counts()[nodes[1].host.Addr().String()] - before; got != 0 {
		t.Errorf("lb2 sent %d requests to app1 after the cluster took it out", got)
	}
}
