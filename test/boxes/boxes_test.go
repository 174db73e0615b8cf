// Package boxes proves the user's story end to end on real root file
// systems booted with systemd (issue 6, "The proof"): the .deb installed
// on three systemd-nspawn boxes, a cluster formed with the CLI, a box
// pulled and booted again, the day-to-day commands, an upgrade under load,
// and remove/purge. It needs root, debootstrap and systemd-nspawn, and
// minutes: `make e2e` runs it (it builds the two packages it installs);
// `make test` skips it.
package boxes

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// clusterStatus is the part of `fulcrum cluster status --json` read here.
type clusterStatus struct {
	Node          string       `json:"node"`
	Leader        string       `json:"leader"`
	Quorum        bool         `json:"quorum"`
	Nodes         []nodeStatus `json:"nodes"`
	ConfigVersion uint64       `json:"config_version"`
	VIPHolders    []string     `json:"vip_holders"`
	Warnings      []string     `json:"warnings"`
}

type nodeStatus struct {
	Name    string `json:"name"`
	Gossip  string `json:"gossip"`
	Raft    string `json:"raft"`
	Applied uint64 `json:"applied_config_version"`
	Version string `json:"version"`
}

func (s clusterStatus) node(name string) (nodeStatus, bool) {
	i := slices.IndexFunc(s.Nodes, func(n nodeStatus) bool { return n.Name == name })
	if i < 0 {
		return nodeStatus{}, false
	}
	return s.Nodes[i], true
}

// debFile is a package to install: its path (from the environment that
// `make e2e` sets) and its version.
type debFile struct{ path, version string }

func debFromEnv(t *testing.T, key string) debFile {
	t.Helper()
	p := os.Getenv(key)
	if p == "" {
		t.Fatalf("%s is not set: run `make e2e`, which builds the packages and sets it", key)
	}
	out, err := exec.Command("dpkg-deb", "-f", p, "Version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s=%s: dpkg-deb: %v\n%s", key, p, err, out)
	}
	return debFile{path: p, version: strings.TrimSpace(string(out))}
}

// e2e is the state of one run.
type e2e struct {
	t        *testing.T
	lab      *netlab.Lab
	boxes    []*box
	backends []*backend
	client   *http.Client
	vipURL   string
}

// fulcrum runs the CLI inside a box.
func (e *e2e) fulcrum(b *box, args ...string) (string, error) {
	return b.run(60*time.Second, append([]string{"fulcrum"}, args...)...)
}

func (e *e2e) status(b *box) (clusterStatus, error) {
	var st clusterStatus
	out, err := e.fulcrum(b, "cluster", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("%s: cluster status --json: %v: %s", b.name, err, out)
	}
	return st, nil
}

// waitFor polls cond every 100 ms until it holds, or fails the test after
// timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
	return time.Since(start)
}

// settled waits until b sees every box alive with quorum, every node at
// config version want (0: any) and exactly one VIP holder; it returns the
// last status.
func (e *e2e) settled(b *box, want uint64, timeout time.Duration, live ...*box) clusterStatus {
	e.t.Helper()
	if live == nil {
		live = e.boxes
	}
	var last clusterStatus
	var lastErr error
	ok := func() bool {
		st, err := e.status(b)
		last, lastErr = st, err
		if err != nil || !st.Quorum || len(st.VIPHolders) != 1 || (want != 0 && st.ConfigVersion != want) {
			return false
		}
		for _, x := range live {
			ns, found := st.node(x.name)
			if !found || ns.Gossip != "alive" || (want != 0 && ns.Applied != want) {
				return false
			}
		}
		return true
	}
	start := time.Now()
	for deadline := start.Add(timeout); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: cluster not settled after %v (want %d live at version %d, one VIP holder): %+v %v", b.name, timeout, len(live), want, last, lastErr)
		}
	}
	return last
}

func (e *e2e) box(name string) *box {
	for _, b := range e.boxes {
		if b.name == name {
			return b
		}
	}
	e.t.Fatalf("no box named %q", name)
	return nil
}

// spread sends n requests to the VIP and counts the answers per backend.
func (e *e2e) spread(n int) map[string]int {
	e.t.Helper()
	seen := map[string]int{}
	for range n {
		st, body, err := get(e.client, e.vipURL)
		if err != nil || st != 200 {
			e.t.Fatalf("GET %s: %d %v", e.vipURL, st, err)
		}
		seen[body]++
	}
	return seen
}

// lbConfig is the proxy config applied to the cluster: the VIP, and a
// frontend on every node's port 8080 balancing the backends named.
func (e *e2e) lbConfig(servers ...int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# applied by test/boxes
global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
vip:
  mode: active-passive
  addresses: ["%s/24"]
  garp: {burst: 3, interval: 100ms, refresh: 2s}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
backends:
  - name: app
    servers:
`, e.lab.VIP())
	for _, i := range servers {
		fmt.Fprintf(&b, "      - {name: app%d, address: %q}\n", i, e.lab.Client().HostPort(uint16(9000+i)))
	}
	return b.String()
}

// apply writes doc into b and applies it with `fulcrum config apply`; it
// returns the new version.
func (e *e2e) apply(b *box, doc string) uint64 {
	e.t.Helper()
	b.put("root/lb.yaml", []byte(doc), 0o644)
	out, err := e.fulcrum(b, "config", "apply", "-f", "/root/lb.yaml", "--json")
	if err != nil {
		e.t.Fatalf("%s: config apply: %v\n%s", b.name, err, out)
	}
	var ap struct {
		Version uint64            `json:"version"`
		Applied map[string]uint64 `json:"applied"`
	}
	if err := json.Unmarshal([]byte(out), &ap); err != nil {
		e.t.Fatalf("%s: config apply --json: %v\n%s", b.name, err, out)
	}
	return ap.Version
}

// install copies a .deb into b and installs it with dpkg -i.
func (e *e2e) install(b *box, d debFile) time.Duration {
	e.t.Helper()
	data, err := os.ReadFile(d.path)
	if err != nil {
		e.t.Fatal(err)
	}
	in := "root/" + filepath.Base(d.path)
	b.put(in, data, 0o644)
	start := time.Now()
	b.must(3*time.Minute, "dpkg", "-i", "/"+in)
	took := time.Since(start)
	if v := strings.TrimSpace(b.must(10*time.Second, "dpkg-query", "-W", "-f", "${Version}", "fulcrum")); v != d.version {
		e.t.Fatalf("%s: dpkg-query says fulcrum %s after installing %s", b.name, v, d.version)
	}
	return took
}

// TestBoxes is the story of issue 6 on three booted boxes.
func TestBoxes(t *testing.T) {
	requireE2E(t)
	began := time.Now()
	oldDeb := debFromEnv(t, "FULCRUM_E2E_DEB")
	newDeb := debFromEnv(t, "FULCRUM_E2E_DEB_UPGRADE")
	if out, err := exec.Command("dpkg", "--compare-versions", newDeb.version, "gt", oldDeb.version).CombinedOutput(); err != nil {
		t.Fatalf("the upgrade package %s is not newer than %s: %v %s", newDeb.version, oldDeb.version, err, out)
	}
	lower := rootfs(t)

	lab, err := netlab.New(t, netlab.Options{Prefix: "box", Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	sweepStaleBoxes(t, lower)
	e := &e2e{t: t, lab: lab, vipURL: "http://" + netipPort(lab, 8080) + "/"}
	e.client = lab.HTTPClient(lab.Client())
	e.client.Transport.(*http.Transport).DisableKeepAlives = true
	e.client.Timeout = 500 * time.Millisecond

	// Three backends in the client namespace, counting their requests.
	for i := 1; i <= 3; i++ {
		be := &backend{name: fmt.Sprintf("app%d", i)}
		ln, err := lab.Listen(lab.Client(), "tcp4", lab.Client().HostPort(uint16(9000+i)))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: be, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		e.backends = append(e.backends, be)
	}

	// A box on a LAN has a default route: the package's node config takes
	// the cluster address (and the VIP interface) from it. The gateway
	// does not exist; nothing leaves the lab.
	gw := lab.Subnet().Addr().Next().String()
	dir := t.TempDir()
	for i := 1; i <= 3; i++ {
		if out, err := lab.Exec(t.Context(), lab.Node(i), "ip", "route", "add", "default", "via", gw, "dev", "eth0"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		e.boxes = append(e.boxes, newBox(t, lab, i, lower, dir))
	}
	start := time.Now()
	for _, b := range e.boxes {
		b.boot()
	}
	t.Logf("3 boxes booted (systemd answering) in %v", time.Since(start).Round(time.Millisecond))

	// 1. The package, installed by dpkg in each box: the service runs.
	for _, b := range e.boxes {
		took := e.install(b, oldDeb)
		b.waitUnit("fulcrum.service", 30*time.Second)
		if out := strings.TrimSpace(b.must(10*time.Second, "fulcrum", "version")); out != "fulcrum "+oldDeb.version {
			t.Fatalf("%s: fulcrum version says %q, want fulcrum %s", b.name, out, oldDeb.version)
		}
		en := strings.TrimSpace(b.must(10*time.Second, "systemctl", "is-enabled", "fulcrum.service"))
		t.Logf("%s: dpkg -i %s took %v; fulcrum.service active, %s", b.name, filepath.Base(oldDeb.path), took.Round(time.Millisecond), en)
	}

	// 2. A cluster, formed with the CLI: init, join, apply.
	box1, box2, box3 := e.boxes[0], e.boxes[1], e.boxes[2]
	out, err := e.fulcrum(box1, "cluster", "init", "--json")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	var ini struct {
		Token       string `json:"token"`
		JoinCommand string `json:"join_command"`
	}
	if err := json.Unmarshal([]byte(out), &ini); err != nil || ini.Token == "" {
		t.Fatalf("cluster init --json: %v\n%s", err, out)
	}
	t.Logf("box1: cluster init; join command: %s", strings.Replace(ini.JoinCommand, ini.Token, "<token>", 1))
	for _, b := range []*box{box2, box3} {
		out, err := e.fulcrum(b, "cluster", "join", box1.host.Addr().String(), "--token", ini.Token)
		if err != nil {
			t.Fatalf("%s: cluster join: %v\n%s", b.name, err, out)
		}
	}
	waitFor(t, 30*time.Second, "three live nodes", func() bool {
		st, err := e.status(box3)
		if err != nil || !st.Quorum || len(st.Nodes) != 3 {
			return false
		}
		for _, n := range st.Nodes {
			if n.Gossip != "alive" {
				return false
			}
		}
		return true
	})
	start = time.Now()
	v2 := e.apply(box2, e.lbConfig(1, 2, 3))
	waitFor(t, 20*time.Second, "the client to reach the VIP", func() bool {
		st, _, err := get(e.client, e.vipURL)
		return err == nil && st == 200
	})
	t.Logf("config version %d applied from box2; the client reaches %s after %v", v2, e.vipURL, time.Since(start).Round(time.Millisecond))
	st := e.settled(box1, v2, 20*time.Second)
	holder := e.box(st.VIPHolders[0])
	if out := holder.must(10*time.Second, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, " "+lab.VIP().String()+"/24 ") {
		t.Fatalf("%s holds the VIP by cluster status, but its eth0 has:\n%s", holder.name, out)
	}
	if seen := e.spread(30); len(seen) != 3 {
		t.Errorf("30 requests through the VIP reached %v, want all three backends", seen)
	}

	// 3. Pull a node: the VIP holder's box loses power while the client
	// keeps sending: its link goes silent and its container is killed
	// outright. What a dead machine's kernel held goes too: the lab
	// namespace outlives the container, so the VIP the agent put on eth0
	// is removed by hand (else that namespace would keep answering ARP
	// for it and refuse connections, which no dead box does). The VIP
	// moves; the box boots again and rejoins.
	s := startStream(e.client, e.vipURL, 20*time.Millisecond, 3000)
	time.Sleep(time.Second)
	if err := lab.Cable(holder.host, false); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := holder.kill(); err != nil {
		t.Fatal(err)
	}
	if out, err := lab.Exec(t.Context(), holder.host, "ip", "addr", "del", lab.VIP().String()+"/24", "dev", "eth0"); err != nil {
		t.Logf("%s: the VIP was not on its eth0 at the kill: %v %s", holder.name, err, out)
	}
	var survivor *box
	for _, b := range e.boxes {
		if b != holder {
			survivor = b
			break
		}
	}
	waitFor(t, 30*time.Second, "the VIP to serve again after "+holder.name+" was killed", func() bool {
		_, ok := s.okAfter(killed.Add(100 * time.Millisecond))
		return ok
	})
	time.Sleep(2 * time.Second)
	fs := stats(s.stop())
	t.Logf("pulled %s (VIP holder): %d requests, %d failed %v; longest gap between answers %v (failover)",
		holder.name, fs.sent, fs.failed, fs.errs, fs.maxGap.Round(time.Millisecond))
	if fs.maxGap > 10*time.Second {
		t.Errorf("failover gap %v, want under 10 s", fs.maxGap)
	}
	var others []*box
	for _, b := range e.boxes {
		if b != holder {
			others = append(others, b)
		}
	}
	st = e.settled(survivor, v2, 20*time.Second, others...)
	if st.VIPHolders[0] == holder.name {
		t.Fatalf("the killed %s still holds the VIP: %+v", holder.name, st)
	}
	t.Logf("%s now holds the VIP", st.VIPHolders[0])
	waitFor(t, 20*time.Second, "the survivors to declare "+holder.name+" dead", func() bool {
		st, err := e.status(survivor)
		n, _ := st.node(holder.name)
		return err == nil && n.Gossip == "dead"
	})
	// A configuration change while it is away: it must catch up by itself.
	v3 := e.apply(survivor, e.lbConfig(1, 2, 3)+"# while "+holder.name+" was down\n")
	if err := holder.unmount(); err != nil { // and mounted again: only the upper dir persists
		t.Fatal(err)
	}
	if err := lab.Cable(holder.host, true); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	holder.boot()
	up := holder.waitUnit("fulcrum.service", 60*time.Second)
	t.Logf("%s booted again from its upper dir: fulcrum.service active %v after boot, %v after the start",
		holder.name, up.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	e.settled(survivor, v3, 30*time.Second)
	own := e.settled(holder, v3, 30*time.Second)
	t.Logf("%s rejoined by itself: the cluster sees it alive at version %d %v after the boot; leader %s, VIP on %s",
		holder.name, v3, time.Since(start).Round(time.Millisecond), own.Leader, own.VIPHolders[0])
	e.oneVIP(own.VIPHolders[0])

	// 4. Day-to-day commands from a box, seen by the client.
	out = box3.must(30*time.Second, "fulcrum", "cluster", "status")
	for _, want := range []string{"quorum yes", "box1", "box2", "box3"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("box3: fulcrum cluster status:\n%s", out)
	box3.must(30*time.Second, "fulcrum", "server", "drain", "app/app1")
	waitFor(t, 10*time.Second, "the drain of app1 to take effect", func() bool {
		for range 6 {
			if _, body, err := get(e.client, e.vipURL); err != nil || body == "app1" {
				return false
			}
		}
		return true
	})
	before := e.backends[0].count()
	seen := e.spread(30)
	if got := e.backends[0].count() - before; got != 0 || seen["app1"] != 0 {
		t.Errorf("app1 drained, yet it got %d of 30 requests (%v)", got, seen)
	}
	t.Logf("server drain app/app1: 30 requests went %v, app1 got none", seen)
	box3.must(30*time.Second, "fulcrum", "server", "enable", "app/app1")
	waitFor(t, 10*time.Second, "app1 back in rotation", func() bool {
		_, body, err := get(e.client, e.vipURL)
		return err == nil && body == "app1"
	})
	v4 := e.apply(box3, e.lbConfig(1, 2))
	e.settled(box3, v4, 20*time.Second)
	if seen := e.spread(30); seen["app3"] != 0 {
		t.Errorf("version %d has no app3, yet it answered: %v", v4, seen)
	}
	out = box1.must(30*time.Second, "fulcrum", "config", "history")
	t.Logf("box1: fulcrum config history:\n%s", out)
	for _, v := range []uint64{1, v2, v3, v4} {
		if !strings.Contains(out, fmt.Sprint(v)) {
			t.Errorf("config history lacks version %d", v)
		}
	}
	if !strings.Contains(out, fmt.Sprintf("%d *", v4)) {
		t.Errorf("config history does not mark %d as current", v4)
	}
	out = box1.must(30*time.Second, "fulcrum", "config", "rollback", fmt.Sprint(v3))
	t.Logf("box1: fulcrum config rollback %d: %s", v3, strings.TrimSpace(out))
	v5 := v4 + 1
	e.settled(box1, v5, 20*time.Second)
	waitFor(t, 10*time.Second, "app3 back after the rollback", func() bool {
		return e.spread(6)["app3"] > 0
	})
	if seen := e.spread(30); len(seen) != 3 {
		t.Errorf("after the rollback to %d: %v, want all three backends", v3, seen)
	}

	// 5. Upgrade every box in turn under load: the VIP keeps serving.
	// A client as issue 5 describes it: a new connection per request, and
	// time for a SYN retransmitted after a second (a planned hand-over
	// drops the SYNs that arrive while it finishes).
	uc := e.lab.HTTPClient(e.lab.Client())
	uc.Transport.(*http.Transport).DisableKeepAlives = true
	uc.Timeout = 3 * time.Second
	s = startStream(uc, e.vipURL, 20*time.Millisecond, 30000)
	var upgraded []*box
	for _, b := range e.boxes {
		st := e.settled(b, v5, 30*time.Second)
		held := st.VIPHolders[0] == b.name
		pid0 := strings.TrimSpace(b.must(10*time.Second, "systemctl", "show", "-P", "MainPID", "fulcrum.service"))
		took := e.install(b, newDeb)
		b.waitUnit("fulcrum.service", 60*time.Second)
		pid1 := strings.TrimSpace(b.must(10*time.Second, "systemctl", "show", "-P", "MainPID", "fulcrum.service"))
		if got := strings.TrimSpace(b.must(10*time.Second, "fulcrum", "version")); got != "fulcrum "+newDeb.version {
			t.Errorf("%s: after the upgrade fulcrum version says %q", b.name, got)
		}
		if pid0 == pid1 {
			t.Errorf("%s: the agent was not restarted by the upgrade (MainPID %s)", b.name, pid0)
		}
		if held {
			// The old package's prerm drained the node: its agent let the
			// VIP go before the restart (the last ownership change it
			// logged), rather than taking it down with the process.
			j, _ := b.run(10*time.Second, "journalctl", "--no-pager", "-o", "cat", "_PID="+pid0, "-g", "VIP ownership changed")
			lines := strings.Split(strings.TrimSpace(j), "\n")
			if last := lines[len(lines)-1]; !strings.Contains(last, "hold=false") {
				t.Errorf("%s held the VIP, but its old agent's last ownership change is %q, want hold=false (the prerm drain)", b.name, last)
			} else {
				t.Logf("%s: the old agent, before the restart: %s", b.name, last)
			}
		}
		upgraded = append(upgraded, b)
		st = e.settled(b, v5, 30*time.Second)
		for _, x := range e.boxes {
			n, _ := st.node(x.name)
			want := oldDeb.version
			if slices.Contains(upgraded, x) {
				want = newDeb.version
			}
			if n.Raft != "leader" && n.Raft != "follower" {
				t.Errorf("after upgrading %s: %s is %q in Raft, want a voter", b.name, x.name, n.Raft)
			}
			if n.Version != want {
				t.Errorf("after upgrading %s: %s runs %q, want %q", b.name, x.name, n.Version, want)
			}
		}
		if len(st.Nodes) != 3 {
			t.Errorf("after upgrading %s: %d nodes in the cluster: %+v", b.name, len(st.Nodes), st.Nodes)
		}
		t.Logf("%s upgraded to %s in %v (held the VIP: %v; agent PID %s -> %s); still a voter, VIP on %s",
			b.name, newDeb.version, took.Round(time.Millisecond), held, pid0, pid1, st.VIPHolders[0])
		if len(upgraded) == 1 {
			t.Run("mixed-versions-config-gate", func(t *testing.T) {
				e.versionGate(t, b, oldDeb)
			})
		}
	}
	us := stats(s.stop())
	t.Logf("upgrade of 3 boxes under load: %d requests, %d failed %v; longest gap between answers %v",
		us.sent, us.failed, us.errs, us.maxGap.Round(time.Millisecond))
	if us.maxGap > 3*time.Second {
		t.Errorf("the VIP did not answer for %v during the upgrade (from %s)", us.maxGap, us.gapFrom.Format("15:04:05.000"))
	}
	// Each restart is preceded by a planned hand-over (the prerm drain):
	// no request may fail.
	if us.failed > 0 {
		t.Errorf("%d of %d requests failed during the upgrade, want none", us.failed, us.sent)
	}
	// Every node upgraded: the gate lifts, the level-3 key applies.
	v6 := e.apply(box1, e.lbConfigNext())
	if v6 != v5+1 {
		t.Errorf("config apply of vip.handover_timeout after the upgrade: version %d, want %d", v6, v5+1)
	}
	e.oneVIP(e.settled(box1, v6, 30*time.Second).VIPHolders[0])
	t.Logf("all boxes on %s: vip.handover_timeout applied as version %d", newDeb.version, v6)

	// 6. remove keeps the config and the data; purge deletes them.
	b := box3
	b.must(2*time.Minute, "apt-get", "remove", "-y", "-q", "fulcrum")
	if out, _ := b.run(10*time.Second, "systemctl", "is-active", "fulcrum.service"); strings.TrimSpace(out) == "active" {
		t.Errorf("%s: fulcrum.service still active after apt-get remove", b.name)
	}
	if out := b.must(10*time.Second, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "fulcrum"); strings.TrimSpace(out) != "rc" {
		t.Errorf("%s: after apt-get remove the package state is %q, want rc", b.name, out)
	}
	for _, p := range []string{"/etc/fulcrum/fulcrum.yaml", "/etc/fulcrum/lb.yaml", "/var/lib/fulcrum"} {
		if _, err := b.run(10*time.Second, "test", "-e", p); err != nil {
			t.Errorf("%s: %s gone after apt-get remove", b.name, p)
		}
	}
	if out, err := b.run(10*time.Second, "sh", "-c", "ls -A /var/lib/fulcrum | wc -l"); err != nil || strings.TrimSpace(out) == "0" {
		t.Errorf("%s: /var/lib/fulcrum is empty after apt-get remove (%v)", b.name, err)
	}
	waitFor(t, 20*time.Second, "the VIP to serve with box3 removed", func() bool {
		st, _, err := get(e.client, e.vipURL)
		return err == nil && st == 200
	})
	b.must(2*time.Minute, "apt-get", "purge", "-y", "-q", "fulcrum")
	for _, p := range []string{"/etc/fulcrum", "/var/lib/fulcrum"} {
		if _, err := b.run(10*time.Second, "test", "-e", p); err == nil {
			t.Errorf("%s: %s still there after apt-get purge", b.name, p)
		}
	}
	if out, _ := b.run(10*time.Second, "dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "fulcrum"); strings.HasPrefix(strings.TrimSpace(out), "rc") || strings.HasPrefix(strings.TrimSpace(out), "ii") {
		t.Errorf("%s: after purge the package state is %q", b.name, out)
	}
	t.Logf("box3: apt-get remove kept /etc/fulcrum and /var/lib/fulcrum; apt-get purge removed them; the VIP still serves")
	t.Logf("the whole story took %v", time.Since(began).Round(time.Second))
}

// oneVIP checks that the VIP is on holder's eth0 and on no other box's.
func (e *e2e) oneVIP(holder string) {
	e.t.Helper()
	for _, b := range e.boxes {
		out, err := e.lab.Exec(e.t.Context(), b.host, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil {
			e.t.Fatalf("%v\n%s", err, out)
		}
		if has := strings.Contains(out, " "+e.lab.VIP().String()+"/"); has != (b.name == holder) {
			e.t.Errorf("%s has the VIP on eth0: %v, but the holder is %s:\n%s", b.name, has, holder, out)
		}
	}
}

// versionGate is the mixed-version check of issue 6: while the nodes run
// different versions, a config that uses a key the oldest node does not
// know must be refused by `config apply` with a message saying so, and
// nothing changes. The first package (`make e2e` builds it with its schema
// level pinned to 2, standing in for the release before
// vip.handover_timeout) does not know vip.handover_timeout.
func (e *e2e) versionGate(t *testing.T, upgraded *box, oldDeb debFile) {
	st, err := e.status(upgraded)
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	versions := map[string]string{}
	for _, n := range st.Nodes {
		versions[n.Name] = n.Version
		if n.Version == oldDeb.version {
			old = append(old, n.Name)
		}
	}
	if len(slices.Compact(slices.Sorted(maps.Values(versions)))) < 2 || len(old) == 0 {
		t.Fatalf("precondition: the nodes should run two versions now, status says %v", versions)
	}
	t.Logf("mixed versions: %v", versions)
	before := st.ConfigVersion
	upgraded.put("root/lb-next.yaml", []byte(e.lbConfigNext()), 0o644)
	out, err := e.fulcrum(upgraded, "config", "apply", "-f", "/root/lb-next.yaml")
	if err == nil {
		t.Fatalf("config apply of vip.handover_timeout with %v on %s succeeded:\n%s", old, oldDeb.version, out)
	}
	slices.Sort(old)
	for _, want := range []string{"vip.handover_timeout", "config schema 3", fmt.Sprint(old), "upgrade every node first"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	t.Logf("%s: config apply refused: %s", upgraded.name, strings.TrimSpace(out))
	if st, err := e.status(upgraded); err != nil || st.ConfigVersion != before {
		t.Errorf("after the refusal the config version is %d (%v), want %d", st.ConfigVersion, err, before)
	}
}

// lbConfigNext is lbConfig(1, 2, 3) with a key of schema level 3.
func (e *e2e) lbConfigNext() string {
	return strings.Replace(e.lbConfig(1, 2, 3), "  garp:", "  handover_timeout: 3s\n  garp:", 1)
}

// netipPort is "VIP:port".
func netipPort(lab *netlab.Lab, port uint16) string {
	return fmt.Sprintf("%s:%d", lab.VIP(), port)
}
