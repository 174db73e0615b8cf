package test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// TestAgentInLab runs the agent in its own network namespace (n1), with
// its backends in two others (n2, n3), and a client in a fourth: the
// pattern the cluster tests build on.
func TestAgentInLab(t *testing.T) {
	netlab.Require(t)
	bin := binary(t)
	lab, err := netlab.New(t, netlab.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	n1, n2, n3 := lab.Node(1), lab.Node(2), lab.Node(3)
	c := lab.HTTPClient(lab.Client())
	backends := []string{n2.HostPort(8080), n3.HostPort(8080)}
	for i, h := range []*netlab.Host{n2, n3} {
		lab.Start(h, nil, bin, "demo-backend", "--listen", backends[i], "--name", "app-"+h.Name())
	}
	for _, a := range backends {
		waitFor(t, 5*time.Second, "demo backend "+a, func() bool {
			_, _, err := get(c, "http://"+a+"/healthz")
			return err == nil
		})
	}

	dir := t.TempDir()
	lbPath, nodePath := filepath.Join(dir, "lb.yaml"), filepath.Join(dir, "node.yaml")
	frontend := n1.HostPort(8000)
	writeFile(t, lbPath, lbConfig(frontend, backends, []int{1, 1}))
	writeFile(t, nodePath, fmt.Sprintf("node: {name: n1, data_dir: %s}\nadmin: {socket: %s}\nproxy_config: %s\n",
		dir, filepath.Join(dir, "admin.sock"), lbPath))
	agent := lab.Start(n1, nil, bin, "agent", "--config", nodePath)
	waitFor(t, 10*time.Second, "the agent in n1 to serve "+frontend, func() bool {
		_, _, err := get(c, "http://"+frontend+"/")
		return err == nil || agent.Exited()
	})
	if agent.Exited() {
		t.Fatalf("agent exited:\n%s", agent.Output())
	}

	seen := map[string]int{}
	for range 20 {
		status, body, err := get(c, "http://"+frontend+"/")
		if err != nil || status != 200 {
			t.Fatalf("GET via the agent: %d %v", status, err)
		}
		seen[body]++
	}
	if seen["app-n2"] == 0 || seen["app-n3"] == 0 || seen["app-n2"]+seen["app-n3"] != 20 {
		t.Errorf("answers from the client through n1: %v, want both backends", seen)
	}

}
