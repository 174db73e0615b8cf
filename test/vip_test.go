package test

import (
	"context"
	be "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// This file tests active-passive VIP failover end to end (issue 5): three
// agents in lab namespaces formed with the real CLI, a demo backend in the
// client namespace that answers with the address of the node whose proxy
// forwarded the request, a sampler of every node's eth0 addresses that
// fails the test on two holders, and a watcher of the gratuitous ARPs the
// client receives.

// vipClusterStatus is the part of `cluster status --json` read here.
type vipClusterStatus struct {
	Leader     string           `json:"leader"`
	Quorum     bool             `json:"quorum"`
	Nodes      []nodeStatusJSON `json:"nodes"`
	VIPHolders []string         `json:"vip_holders"`
	Warnings   []string         `json:"warnings"`
}

// vipStatusJSON is `fulcrum vip status --json`.
type vipStatusJSON struct {
	Mode      string `json:"mode"`
	Hold      bool   `json:"hold"`
	Reason    string `json:"reason"`
	Forced    bool   `json:"forced"`
	Reconcile struct {
		Desired   []string `json:"desired"`
		Actual    []string `json:"actual"`
		LastError string   `json:"last_error"`
	} `json:"reconcile"`
}

// vipLab is a formed three-node cluster with an active-passive VIP.
type vipLab struct {
	t      *testing.T
	lab    *netlab.Lab
	bin    string
	dir    string
	nodes  []*lbNode
	vip    netip.Addr
	byAddr map[string]string // node lab address -> node name
	byMAC  map[string]string // node MAC -> node name
	smp    *vipSampler
	arp    *arpWatch
}

func (v *vipLab) cli(n *lbNode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return v.lab.Exec(ctx, n.host, append([]string{v.bin}, append(args, "--config", n.nodePath)...)...)
}

func (v *vipLab) status(n *lbNode) (vipClusterStatus, error) {
	var st vipClusterStatus
	out, err := v.cli(n, "cluster", "status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	i := strings.IndexByte(out, '{')
	if i < 0 {
		return st, fmt.Errorf("no JSON: %s", out)
	}
	return st, json.Unmarshal([]byte(out[i:]), &st)
}

func (v *vipLab) vipStatus(n *lbNode) (vipStatusJSON, error) {
	var st vipStatusJSON
	out, err := v.cli(n, "vip", "status", "--json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	i := strings.IndexByte(out, '{')
	if i < 0 {
		return st, fmt.Errorf("no JSON: %s", out)
	}
	return st, json.Unmarshal([]byte(out[i:]), &st)
}

func (v *vipLab) node(name string) *lbNode {
	for _, n := range v.nodes {
		if n.name == name {
			return n
		}
	}
	v.t.Fatalf("no node %q", name)
	return nil
}

// holdsNow reads n's eth0 with `ip -br addr` and reports whether the VIP
// is on it (whatever its prefix length).
func (v *vipLab) holdsNow(n *lbNode) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "-n", n.host.NS(), "-br", "addr", "show", "dev", "eth0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("ip -n %s addr: %v: %s", n.host.NS(), err, out)
	}
	want := v.vip.String() + "/"
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, want) {
			return true, nil
		}
	}
	return false, nil
}

// holders reads every node's eth0 now.
func (v *vipLab) holders() []string {
	var hs []string
	for _, n := range v.nodes {
		h, err := v.holdsNow(n)
		if err != nil {
			v.t.Fatal(err)
		}
		if h {
			hs = append(hs, n.name)
		}
	}
	return hs
}

// waitHolder waits until exactly one node other than those in ignore
// holds the VIP on its interface and none of the others (ignore aside)
// does, and returns it and when it was seen.
func (v *vipLab) waitHolder(d time.Duration, what string, ignore ...string) (string, time.Time) {
	v.t.Helper()
	var got []string
	deadline := time.Now().Add(d)
	for {
		got = got[:0]
		for _, n := range v.nodes {
			if slices.Contains(ignore, n.name) {
				continue
			}
			if h, err := v.holdsNow(n); err != nil {
				v.t.Fatal(err)
			} else if h {
				got = append(got, n.name)
			}
		}
		if len(got) == 1 {
			return got[0], time.Now()
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%s: after %v the VIP is on %v (ignoring %v), want exactly one node", what, d, got, ignore)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkOwner checks, for a holder found on the interfaces, what the CLI
// says: it is the Raft leader, `vip status` on it says hold with the VIP
// desired and actual, the others do not hold, and (eventually, once
// gossip has caught up) vip_holders lists it alone. live are the nodes
// whose agents run.
func (v *vipLab) checkOwner(owner string, live []*lbNode) {
	v.t.Helper()
	o := v.node(owner)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := v.status(o)
		if err == nil && st.Leader == owner && slices.Equal(st.VIPHolders, []string{owner}) {
			break
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("timed out after 15s waiting for %s alone in vip_holders and leader; its last cluster status: %+v (err %v)", owner, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Each holder's since and last announcement, as gossip publishes them.
	waitFor(v.t, 5*time.Second, owner+"'s hold and announcement times in cluster status", func() bool {
		st, err := v.status(o)
		if err != nil {
			return false
		}
		for _, ns := range st.Nodes {
			if (ns.VIP != nil) != (ns.Name == owner) {
				return false
			}
			if ns.VIP != nil && (ns.VIP.Since.IsZero() || ns.VIP.LastAnnounce.Before(ns.VIP.Since)) {
				return false
			}
		}
		return true
	})
	if out, err := v.cli(o, "cluster", "status"); err != nil || !strings.Contains(out, "held by "+owner+" since ") ||
		!strings.Contains(out, "last GARP ") || !strings.Contains(out, "   without quorum: ") {
		v.t.Errorf("cluster status on %s does not show it holding the VIP (err %v):\n%s", owner, err, out)
	}
	for _, n := range live {
		vs, err := v.vipStatus(n)
		if err != nil {
			v.t.Errorf("vip status on %s: %v", n.name, err)
			continue
		}
		want := n.name == owner
		pfx := v.vip.String() + "/24"
		if vs.Mode != "active-passive" || vs.Hold != want || slices.Contains(vs.Reconcile.Actual, pfx) != want ||
			slices.Contains(vs.Reconcile.Desired, pfx) != want || vs.Reconcile.LastError != "" {
			v.t.Errorf("vip status on %s (owner %s): %+v", n.name, owner, vs)
		}
	}
}

func (v *vipLab) startAgent(n *lbNode) {
	v.t.Helper()
	n.agent = v.lab.Start(n.host, nil, v.bin, "agent", "--config", n.nodePath)
	waitFor(v.t, 15*time.Second, n.name+"'s agent", func() bool {
		_, err := v.status(n)
		return err == nil || n.agent.Exited()
	})
	if n.agent.Exited() {
		v.t.Fatalf("%s's agent exited:\n%s", n.name, n.agent.Output())
	}
}

// waitAlive waits until `cluster status` on from shows every node of want
// alive in gossip and a quorum.
func (v *vipLab) waitAlive(from *lbNode, want ...*lbNode) {
	v.t.Helper()
	waitFor(v.t, 20*time.Second, fmt.Sprintf("%s to see %d nodes alive", from.name, len(want)), func() bool {
		st, err := v.status(from)
		if err != nil || !st.Quorum {
			return false
		}
		for _, w := range want {
			if !slices.ContainsFunc(st.Nodes, func(ns nodeStatusJSON) bool { return ns.Name == w.name && ns.Gossip == "alive" }) {
				return false
			}
		}
		return true
	})
}

// newVIPLab builds the three-node lab: the backend in the client
// namespace, the node configs, the GARP watcher, the sampler and the
// standalone agents (form makes them a cluster).
func newVIPLab(t *testing.T) *vipLab { return newVIPLabOf(t, "vip", 3) }

// newVIPLabOf is newVIPLab with nodes nodes, their namespaces named after
// prefix.
func newVIPLabOf(t *testing.T, prefix string, nodes int) *vipLab {
	netlab.Require(t)
	bin := binary(t)
	lab, err := netlab.New(t, netlab.Options{Prefix: prefix, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	v := &vipLab{t: t, lab: lab, bin: bin, dir: t.TempDir(), vip: lab.VIP(), byAddr: map[string]string{}, byMAC: map[string]string{}}

	// The backend, in the client namespace: it answers with the address
	// the request came from, i.e. the node whose proxy forwarded it.
	c := lab.Client()
	ln, err := lab.Listen(c, "tcp4", c.HostPort(9001))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	v.nodes = newLBNodes(t, lab, v.dir, nodes, "vip: {interface: eth0}\n")
	for _, n := range v.nodes {
		v.byAddr[n.host.Addr().String()] = n.name
		v.byMAC[n.host.MAC().String()] = n.name
	}
	v.arp = watchGARP(t, c.NS(), v.vip)
	v.smp = startSampler(v)
	for _, n := range v.nodes {
		v.startAgent(n)
	}
	return v
}

// initAndJoin forms the cluster with the CLI: init on the first node, join
// from the others, until every node sees every other alive.
func (v *vipLab) initAndJoin() {
	t := v.t
	t.Helper()
	out, err := v.cli(v.nodes[0], "cluster", "init", "--json")
	if err != nil {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	var ini struct {
		Token string `json:"token"`
	}
	decodeJSON(t, "cluster init --json", out, &ini)
	for _, n := range v.nodes[1:] {
		if out, err := v.cli(n, "cluster", "join", v.nodes[0].host.Addr().String(), "--token", ini.Token); err != nil {
			t.Fatalf("%s: cluster join: %v\n%s", n.name, err, out)
		}
	}
	v.waitAlive(v.nodes[len(v.nodes)-1], v.nodes...)
}

// applyEverywhere applies the proxy config file lb through the second node
// and checks that every node applied it (why: what a refusal would mean).
func (v *vipLab) applyEverywhere(lb, why string) {
	t := v.t
	t.Helper()
	out, err := v.cli(v.nodes[1], "config", "apply", "-f", lb, "--json")
	if err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	var names []string
	for _, n := range v.nodes {
		names = append(names, n.name)
	}
	checkApplied(t, out, names, why)
}

// form runs cluster init and join, applies the VIP config and returns the
// first holder.
func (v *vipLab) form() string {
	t := v.t
	v.initAndJoin()

	// A second frontend binds the VIP itself: the passive nodes must
	// apply it too (IP_FREEBIND).
	lb := filepath.Join(v.dir, "lb.yaml")
	writeFile(t, lb, fmt.Sprintf(`global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
  - {name: vipweb, bind: ["%s"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: %q}
vip:
  mode: active-passive
  addresses: ["%s/24"]
  garp: {burst: 3, interval: 100ms, refresh: 2s}
`, netip.AddrPortFrom(v.vip, 8081), v.lab.Client().HostPort(9001), v.vip))
	start := time.Now()
	v.applyEverywhere(lb, "a passive node must accept a frontend bound to the VIP")
	owner, seen := v.waitHolder(10*time.Second, "first VIP holder")
	t.Logf("VIP %s on %s's eth0 %v after config apply started", v.vip, owner, seen.Sub(start).Round(time.Millisecond))
	return owner
}

// --- the sampler: never two holders -------------------------------------

type reading struct {
	start, end time.Time
	node       int
	holds      bool
	counted    bool // the node's agent runs normally (not killed, not stopped)
}

// vipSampler reads every node's eth0 in turn, round after round, for the
// whole test, with `ip -n NS -br addr show dev eth0`. Nodes whose agent
// the test killed or stopped are read but not counted: their kernel keeps
// whatever address the agent left. A restarted or resumed node is counted
// again from its first reading without the VIP (see excludeUntilDrop).
type vipSampler struct {
	v    *vipLab
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	readings []reading
	excluded map[int]string // node index -> why
	untilDrp map[int]bool   // excluded until the first reading without the VIP
	dropped  map[int]time.Time
	errs     int
	lastErr  error
	checked  int // readings already checked
	rounds   int // complete rounds
}

const (
	samplerPause     = 20 * time.Millisecond
	samplerMaxRounds = 20000 // bounded: 3 x 20000 ip calls at most
)

func startSampler(v *vipLab) *vipSampler {
	s := &vipSampler{v: v, stop: make(chan struct{}), done: make(chan struct{}),
		excluded: map[int]string{}, untilDrp: map[int]bool{}, dropped: map[int]time.Time{}}
	go s.run()
	v.t.Cleanup(s.close)
	return s
}

func (s *vipSampler) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *vipSampler) run() {
	defer close(s.done)
	for range samplerMaxRounds {
		for i, n := range s.v.nodes {
			start := time.Now()
			h, err := s.v.holdsNow(n)
			end := time.Now()
			s.mu.Lock()
			if err != nil {
				s.errs++
				s.lastErr = err
				s.mu.Unlock()
				continue
			}
			if s.untilDrp[i] && !h {
				delete(s.untilDrp, i)
				delete(s.excluded, i)
				s.dropped[i] = end
			}
			_, ex := s.excluded[i]
			s.readings = append(s.readings, reading{start: start, end: end, node: i, holds: h, counted: !ex})
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.rounds++
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-time.After(samplerPause):
		}
	}
}

func (s *vipSampler) index(name string) int {
	for i, n := range s.v.nodes {
		if n.name == name {
			return i
		}
	}
	panic("no node " + name)
}

// catchUp waits until a whole round of readings started after the call
// (at most 2 s), so that a check sees the present.
func (s *vipSampler) catchUp() {
	s.mu.Lock()
	want := s.rounds + 2
	s.mu.Unlock()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		n := s.rounds
		s.mu.Unlock()
		if n >= want {
			return
		}
	}
}

// exclude stops counting name (its agent is killed or stopped).
func (s *vipSampler) exclude(name, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(name)
	s.excluded[i] = why
	delete(s.untilDrp, i)
}

// excludeUntilDrop keeps name excluded until a reading shows it without
// the VIP, then counts it again; dropTime reports when that was.
func (s *vipSampler) excludeUntilDrop(name, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(name)
	s.excluded[i] = why
	s.untilDrp[i] = true
	delete(s.dropped, i)
}

func (s *vipSampler) dropTime(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.dropped[s.index(name)]
	return t, ok
}

// lastHeld returns the end of the last reading that showed name holding
// the VIP, if it is after t.
func (s *vipSampler) lastHeld(name string, t time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(name)
	for k := len(s.readings) - 1; k >= 0; k-- {
		if r := s.readings[k]; r.node == i && r.holds {
			return r.end, r.end.After(t)
		}
	}
	return time.Time{}, false
}

// around describes name's readings within d of t.
func (s *vipSampler) around(name string, t time.Time, d time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(name)
	var b strings.Builder
	for _, r := range s.readings {
		if r.node == i && r.end.After(t.Add(-d)) && r.start.Before(t.Add(d)) {
			fmt.Fprintf(&b, " %s-%s:%v", r.start.Format("05.000"), r.end.Format("05.000"), r.holds)
		}
	}
	return b.String()
}

// holdingAt reports whether name was seen holding the VIP by a reading
// that ended within tol of t.
func (s *vipSampler) holdingAt(name string, t time.Time, tol time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.index(name)
	// Certain only when the node's last reading before t and its first
	// reading after t both show it without the VIP: on a loaded machine
	// readings of one node can be hundreds of milliseconds apart.
	var prev, next *reading
	for k := range s.readings {
		r := &s.readings[k]
		if r.node != i {
			continue
		}
		if r.holds && r.end.After(t.Add(-tol)) && r.start.Before(t.Add(tol)) {
			return true
		}
		if !r.start.After(t) && (prev == nil || r.start.After(prev.start)) {
			prev = r
		}
		if r.end.After(t) && (next == nil || r.end.Before(next.end)) {
			next = r
		}
	}
	return prev != nil && prev.holds || next != nil && next.holds
}

// check fails the test for every two-holder sample since the last check:
// a counted reading of node B holding the VIP whose neighbours in time
// among another counted node A's readings (the one that ended before B's
// started and the one that started after B's ended) both show A holding
// it. Readings are not atomic across nodes, so a single round showing two
// holders ("raw" overlaps, logged) may be a move between two reads; the
// bracket rule only reports overlaps that are certain unless A dropped and
// re-took the VIP within one round. It logs the sampling cadence.
func (s *vipSampler) check(t *testing.T, scenario string) {
	t.Helper()
	s.catchUp()
	s.mu.Lock()
	rs := slices.Clone(s.readings)
	from := s.checked
	s.checked = len(rs)
	errs, lastErr := s.errs, s.lastErr
	s.mu.Unlock()
	byNode := map[int][]reading{}
	for _, r := range rs {
		byNode[r.node] = append(byNode[r.node], r)
	}
	var bad []string
	var maxGap time.Duration
	for _, list := range byNode {
		for k := 1; k < len(list); k++ {
			if list[k].start.Before(rs[from].start) {
				continue
			}
			maxGap = max(maxGap, list[k].end.Sub(list[k-1].end))
		}
	}
	raw := 0
	for _, b := range rs[from:] {
		if !b.holds || !b.counted {
			continue
		}
		for a, list := range byNode {
			if a == b.node {
				continue
			}
			k, _ := slices.BinarySearchFunc(list, b.start, func(r reading, t time.Time) int { return r.start.Compare(t) })
			// list[k-1] started before b; list[k] starts after b did.
			if k == 0 || k >= len(list) {
				continue
			}
			before, after := list[k-1], list[k]
			if before.holds && before.counted && before.end.Sub(b.start) < 60*time.Millisecond {
				raw++
			}
			if before.end.After(b.start) || after.start.Before(b.end) {
				continue
			}
			if before.holds && after.holds && before.counted && after.counted {
				bad = append(bad, fmt.Sprintf("%s and %s both hold the VIP around %s (%s read %s-%s, %s read at %s and %s)",
					s.v.nodes[a].name, s.v.nodes[b.node].name, b.start.Format("15:04:05.000"),
					s.v.nodes[b.node].name, b.start.Format("05.000"), b.end.Format("05.000"),
					s.v.nodes[a].name, before.end.Format("05.000"), after.start.Format("05.000")))
			}
		}
	}
	n := len(rs) - from
	t.Logf("sampler [%s]: %d readings, longest interval between two readings of a node %v, %d raw one-round overlaps, %d two-holder samples, %d ip errors (%v)",
		scenario, n, maxGap.Round(time.Millisecond), raw, len(bad), errs, lastErr)
	for i, b := range bad {
		if i == 10 {
			t.Errorf("[%s] ... and %d more two-holder samples", scenario, len(bad)-10)
			break
		}
		t.Errorf("[%s] two holders: %s", scenario, b)
	}
}

// --- the GARP watcher ----------------------------------------------------

type garpFrame struct {
	at  time.Time
	op  uint16
	mac string
}

// arpWatch records the gratuitous ARPs for the VIP seen in a namespace
// (the client's), through an AF_PACKET socket opened there.
type arpWatch struct {
	vip  netip.Addr
	fd   int
	done chan struct{}

	mu     sync.Mutex
	frames []garpFrame
	other  int // ARP frames that are not GARPs for the VIP
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func watchGARP(t *testing.T, ns string, vip netip.Addr) *arpWatch {
	t.Helper()
	type res struct {
		fd  int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// The thread is left locked: it is discarded when this goroutine
		// ends, so its namespace never leaks to other goroutines.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- res{-1, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{-1, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		ch <- res{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("ARP watcher in %s: %v", ns, r.err)
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	w := &arpWatch{vip: vip, fd: r.fd, done: make(chan struct{})}
	stop := make(chan struct{})
	go w.run(stop)
	t.Cleanup(func() {
		close(stop)
		<-w.done
		unix.Close(w.fd)
	})
	return w
}

func (w *arpWatch) run(stop chan struct{}) {
	defer close(w.done)
	buf := make([]byte, 2048)
	vip := w.vip.As4()
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			continue // timeout (EAGAIN) or EINTR
		}
		at := time.Now()
		p := buf[:n]
		if len(p) < 14+28 || be.BigEndian.Uint16(p[12:14]) != unix.ETH_P_ARP {
			continue
		}
		a := p[14:]
		op := be.BigEndian.Uint16(a[6:8])
		sha, spa, tha, tpa := a[8:14], a[14:18], a[18:24], a[24:28]
		isGARP := string(spa) == string(vip[:]) && string(tpa) == string(vip[:]) &&
			(op == 1 || (op == 2 && string(tha) == string(sha)))
		w.mu.Lock()
		if isGARP {
			w.frames = append(w.frames, garpFrame{at: at, op: op, mac: net.HardwareAddr(slices.Clone(sha)).String()})
		} else {
			w.other++
		}
		w.mu.Unlock()
	}
}

// since returns the GARPs seen at or after t.
func (w *arpWatch) since(t time.Time) []garpFrame {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []garpFrame
	for _, f := range w.frames {
		if !f.at.Before(t) {
			out = append(out, f)
		}
	}
	return out
}

// firstFrom returns the first GARP from name at or after t.
func (v *vipLab) firstGARP(name string, t time.Time) (time.Time, bool) {
	for _, f := range v.arp.since(t) {
		if v.byMAC[f.mac] == name {
			return f.at, true
		}
	}
	return time.Time{}, false
}

// checkGARPs fails the test for every GARP since t sent by a node that the
// sampler did not see holding the VIP within 150 ms of it (a non-holder
// announcing poisons the clients' ARP caches).
func (v *vipLab) checkGARPs(scenario string, t time.Time, ignore ...string) {
	v.t.Helper()
	v.smp.catchUp()
	fs := v.arp.since(t)
	per := map[string]int{}
	for _, f := range fs {
		name := v.byMAC[f.mac]
		if name == "" {
			name = f.mac
		}
		per[name]++
		if slices.Contains(ignore, name) {
			continue
		}
		if !v.smp.holdingAt(name, f.at, 150*time.Millisecond) {
			v.t.Errorf("[%s] %s sent a gratuitous ARP (op %d) for the VIP at %s without holding it; its eth0 read around then: %s",
				scenario, name, f.op, f.at.Format("15:04:05.000"), v.smp.around(name, f.at, 300*time.Millisecond))
		}
	}
	v.t.Logf("[%s] GARP frames for the VIP seen by the client, per sender: %v", scenario, per)
	if os.Getenv("VIP_DEBUG") != "" {
		for _, f := range fs {
			v.t.Logf("  GARP op %d from %s at %s", f.op, v.byMAC[f.mac], f.at.Format("15:04:05.000"))
		}
	}
}

// --- the client's request stream -----------------------------------------

// startProbe starts the client's request stream to url (netlab.Probe),
// naming nodes by the address they answer with.
func (v *vipLab) startProbe(url string, max int) *netlab.Probe {
	return netlab.StartProbe(v.lab, url, max, func(body string) string { return v.byAddr[body] })
}

func (v *vipLab) vipURL(port uint16) string {
	return "http://" + netip.AddrPortFrom(v.vip, port).String() + "/"
}

// pullNode runs the client stream while pull takes the owner away, waits
// until another node holds the VIP and serves the client, lets the
// stream run a little longer, and returns the new owner and the summary.
func (v *vipLab) pullNode(scenario, owner string, pull func()) (string, netlab.ProbeSummary) {
	t := v.t
	t.Helper()
	p := v.startProbe(v.vipURL(8080), 2000)
	time.Sleep(300 * time.Millisecond)
	if !p.ServedBy(time.Time{}, owner) {
		p.Finish(time.Now())
		t.Fatalf("[%s] the client is not served through %s before the pull", scenario, owner)
	}
	t0 := time.Now()
	pull()
	next, seen := v.waitHolder(15*time.Second, scenario+": a new holder", owner)
	if next == owner {
		t.Fatalf("[%s] %s still holds", scenario, owner)
	}
	var served time.Time
	waitFor(t, 15*time.Second, scenario+": the client served through "+next, func() bool {
		served = time.Now()
		return p.ServedBy(t0, next)
	})
	time.Sleep(1500 * time.Millisecond)
	s := p.Finish(t0)
	garp, _ := v.firstGARP(next, t0)
	t.Logf("[%s] %s pulled at T0: VIP on %s's eth0 by T0+%v, first GARP from %s at T0+%v, client served through it by T0+%v",
		scenario, owner, next, seen.Sub(t0).Round(time.Millisecond), next, garp.Sub(t0).Round(time.Millisecond), served.Sub(t0).Round(time.Millisecond))
	t.Logf("[%s] %s", scenario, s)
	for _, f := range s.Fails {
		t.Logf("[%s]   failed request: %s", scenario, f)
	}
	if d, ok := v.smp.lastHeld(owner, t0); ok {
		t.Logf("[%s] %s last seen holding the VIP at T0%s", scenario, owner, rel(d.Sub(t0)))
	}
	if s.LastVia != next {
		t.Errorf("[%s] the last request was served through %q, want %s", scenario, s.LastVia, next)
	}
	return next, s
}

// TestVIPFailover drives the active-passive VIP through formation, a
// drain, a SIGKILL, the killed owner's restart, a cable pull, a SIGSTOP
// and the release rule, on one lab, with the never-two-holders sampler
// and the GARP watcher running throughout.
func TestVIPFailover(t *testing.T) {
	v := newVIPLab(t)
	begin := time.Now()
	all := v.nodes

	// 1. Formation: one holder, the leader; the client reaches the VIP.
	owner := v.form()
	v.checkOwner(owner, all)
	client := v.lab.HTTPClient(v.lab.Client())
	for _, port := range []uint16{8080, 8081} {
		st, body, err := get(client, v.vipURL(port))
		if err != nil || st != 200 || v.byAddr[strings.TrimSpace(body)] != owner {
			t.Errorf("GET %s: %d %q %v, want an answer through %s", v.vipURL(port), st, body, err, owner)
		}
	}
	v.smp.check(t, "formation")
	v.checkGARPs("formation", begin)
	// Each subtest sets healthy when it reaches its end (failed checks
	// aside): the next scenario starts from a known owner.
	healthy := false

	// 2. (c) Drain the owner: no request lost.
	t.Run("drain", func(t *testing.T) {
		v.t = t
		start := time.Now()
		old := owner
		next, s := v.pullNode("drain", old, func() {
			if out, err := v.cli(v.node(old), "node", "drain"); err != nil {
				t.Errorf("node drain on %s: %v\n%s", old, err, out)
			}
		})
		t.Logf("[drain] %s's log: %s", old, ownershipLog(v.node(old).agent.Output()))
		// Known gap (issue 5 stays open on it): a connection the old owner
		// accepted in the instant before it drops the address is lost;
		// closing that window needs the old owner to drop new SYNs for the
		// VIP (netfilter) while it finishes what it holds. Allow that one.
		if s.Failed > 0 {
			t.Errorf("[drain] %d of %d requests failed (e.g. %s), want none", s.Failed, s.Sent, s.SomeErr)
		}
		v.checkOwner(next, all)
		if out, err := v.cli(v.node(old), "node", "resume"); err != nil {
			t.Errorf("node resume on %s: %v\n%s", old, err, out)
		}
		time.Sleep(500 * time.Millisecond)
		if hs := v.holders(); !slices.Equal(hs, []string{next}) {
			t.Errorf("[drain] after resume the VIP is on %v, want [%s]", hs, next)
		}
		v.smp.check(t, "drain")
		v.checkGARPs("drain", start)
		owner = next
		healthy = true
	})
	v.t = t
	if !healthy {
		return
	}
	healthy = false

	// 3a + 4. SIGKILL the owner; then restart it: it must not answer for
	// the VIP.
	t.Run("kill-and-restart", func(t *testing.T) {
		v.t = t
		start := time.Now()
		killed := v.node(owner)
		next, s := v.pullNode("kill", owner, func() {
			v.smp.exclude(killed.name, "SIGKILLed")
			killed.agent.Kill()
		})
		if s.Failed == 0 {
			t.Logf("[kill] no request failed")
		}
		var live []*lbNode
		for _, n := range all {
			if n != killed {
				live = append(live, n)
			}
		}
		v.checkOwner(next, live)
		stale, err := v.holdsNow(killed)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("[kill] the killed owner's eth0 still carries the VIP: %v (the kernel keeps it, and answers ARP for it, until the agent restarts)", stale)

		// The others declare it dead first (as after a real crash).
		waitFor(t, 10*time.Second, next+" to declare "+killed.name+" dead", func() bool {
			st, err := v.status(v.node(next))
			return err == nil && slices.ContainsFunc(st.Nodes, func(ns nodeStatusJSON) bool {
				return ns.Name == killed.name && ns.Gossip == "dead"
			})
		})
		restart := time.Now()
		v.smp.excludeUntilDrop(killed.name, "restarted with a stale VIP")
		v.startAgent(killed)
		waitFor(t, 10*time.Second, "restarted "+killed.name+" to drop the stale VIP", func() bool {
			_, ok := v.smp.dropTime(killed.name)
			return ok
		})
		dropped, _ := v.smp.dropTime(killed.name)
		t.Logf("[restart] %s's agent restarted: stale VIP gone from its eth0 %v later", killed.name, dropped.Sub(restart).Round(time.Millisecond))
		if !strings.Contains(killed.agent.Output(), "found at start-up") {
			t.Errorf("[restart] %s's log does not say it released a VIP found at start-up:\n%s", killed.name, tail(killed.agent.Output(), 4000))
		}
		v.waitAlive(v.node(next), all...)
		time.Sleep(time.Second)
		if at, ok := v.reannounced(next, restart, time.Now()); ok {
			t.Logf("[restart] holder %s re-announced the VIP at restart%s after %s came back", next, rel(at.Sub(restart)), killed.name)
		} else {
			t.Errorf("[restart] holder %s sent no GARP burst when %s rejoined (issue 5: re-announce on every membership change)", next, killed.name)
		}
		if h, _ := v.holdsNow(killed); h {
			t.Errorf("[restart] %s holds the VIP again after its restart", killed.name)
		}
		v.checkOwner(next, all)
		v.smp.check(t, "kill+restart")
		v.checkGARPs("kill+restart", start)
		owner = next
		healthy = true
	})
	v.t = t
	if !healthy {
		return
	}
	healthy = false

	// 3b. Pull the owner's cable: it must step down and drop the VIP
	// before anyone else claims it (the sampler counts it throughout).
	t.Run("cable", func(t *testing.T) {
		v.t = t
		start := time.Now()
		cut := v.node(owner)
		next, _ := v.pullNode("cable", owner, func() {
			if err := v.lab.Cable(cut.host, false); err != nil {
				t.Fatal(err)
			}
		})
		if h, _ := v.holdsNow(cut); h {
			t.Errorf("[cable] the cut-off %s still holds the VIP", cut.name)
		}
		// Plug it back in, with the client stream running: it returns as
		// a follower and must not take the VIP.
		p := v.startProbe(v.vipURL(8080), 1000)
		plugged := time.Now()
		if err := v.lab.Cable(cut.host, true); err != nil {
			t.Fatal(err)
		}
		v.waitAlive(v.node(next), all...)
		time.Sleep(time.Second)
		s := p.Finish(plugged)
		if at, ok := v.reannounced(next, plugged, time.Now()); ok {
			t.Logf("[cable] holder %s re-announced the VIP at plug%s", next, rel(at.Sub(plugged)))
		} else {
			t.Errorf("[cable] holder %s sent no GARP burst when %s came back (issue 5: re-announce on every membership change)", next, cut.name)
		}
		t.Logf("[cable] plugged back in: %s alive again after %v; client meanwhile: %s", cut.name, time.Since(plugged).Round(time.Millisecond), s)
		if s.Failed != 0 {
			t.Errorf("[cable] %d requests failed after the cable was plugged back in (e.g. %s)", s.Failed, s.SomeErr)
		}
		hs := v.holders()
		if len(hs) != 1 {
			t.Fatalf("[cable] after the return the VIP is on %v", hs)
		}
		if hs[0] != next {
			t.Logf("[cable] the VIP moved again after the cable came back: %s -> %s", next, hs[0])
		}
		v.checkOwner(hs[0], all)
		v.smp.check(t, "cable")
		v.checkGARPs("cable", start)
		owner = hs[0]
		healthy = true
	})
	v.t = t
	if !healthy {
		return
	}
	healthy = false

	// 5d. SIGSTOP the owner; once another holds the VIP, SIGCONT: the
	// resumed node drops it without announcing it.
	t.Run("sigstop", func(t *testing.T) {
		v.t = t
		start := time.Now()
		paused := v.node(owner)
		next, _ := v.pullNode("sigstop", owner, func() {
			v.smp.exclude(paused.name, "SIGSTOPped")
			if err := paused.agent.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		})
		time.Sleep(500 * time.Millisecond)
		resumed := time.Now()
		v.smp.excludeUntilDrop(paused.name, "SIGCONTed")
		if err := paused.agent.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "resumed "+paused.name+" to drop the VIP", func() bool {
			_, ok := v.smp.dropTime(paused.name)
			return ok
		})
		dropped, _ := v.smp.dropTime(paused.name)
		t.Logf("[sigstop] %s resumed: VIP gone from its eth0 %v later (it kept the address, and its kernel answered ARP for it, while stopped)",
			paused.name, dropped.Sub(resumed).Round(time.Millisecond))
		time.Sleep(2500 * time.Millisecond) // past a GARP refresh period
		for _, f := range v.arp.since(resumed) {
			if v.byMAC[f.mac] == paused.name {
				t.Errorf("[sigstop] resumed %s sent a gratuitous ARP for the VIP at T+%v after SIGCONT", paused.name, f.at.Sub(resumed).Round(time.Millisecond))
			}
		}
		if hs := v.holders(); !slices.Equal(hs, []string{next}) {
			t.Errorf("[sigstop] after the resume the VIP is on %v, want [%s]", hs, next)
		}
		v.waitAlive(v.node(next), all...)
		v.checkOwner(next, all)
		v.smp.check(t, "sigstop")
		v.checkGARPs("sigstop", start, paused.name)
		owner = next
		healthy = true
	})
	v.t = t
	if !healthy {
		return
	}
	healthy = false

	// SIGTERM on the owner is a planned failover too: it hands the VIP
	// over, loses no request, and leaves no VIP behind when it exits (the
	// sampler counts it throughout).
	t.Run("sigterm", func(t *testing.T) {
		v.t = t
		start := time.Now()
		term := v.node(owner)
		next, s := v.pullNode("sigterm", owner, func() {
			if err := term.agent.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		})
		if err := term.agent.WaitTimeout(10 * time.Second); err != nil {
			// SIGQUIT makes the Go runtime print every goroutine's stack:
			// where the stop hangs.
			term.agent.Signal(syscall.SIGQUIT)
			term.agent.WaitTimeout(3 * time.Second)
			t.Errorf("[sigterm] %s's agent did not exit: %v; its output, with its stacks:\n%s", term.name, err, tail(term.agent.Output(), 200000))
		}
		if s.Failed > 0 {
			t.Errorf("[sigterm] %d of %d requests failed (e.g. %s), want none", s.Failed, s.Sent, s.SomeErr)
		}
		if h, _ := v.holdsNow(term); h {
			t.Errorf("[sigterm] %s's agent exited leaving the VIP on its eth0; log:\n%s", term.name, tail(term.agent.Output(), 3000))
			v.smp.excludeUntilDrop(term.name, "exited with the VIP")
		}
		v.startAgent(term)
		v.waitAlive(v.node(next), all...)
		v.checkOwner(next, all)
		v.smp.check(t, "sigterm")
		v.checkGARPs("sigterm", start)
		owner = next
		healthy = true
	})
	v.t = t
	if !healthy {
		return
	}

	// 5. release (without_quorum auto = release with three voters): kill
	// the two others; the survivor releases until `vip claim --force`.
	t.Run("release", func(t *testing.T) {
		v.t = t
		surv := v.node(owner)
		lost := time.Now()
		for _, n := range all {
			if n != surv {
				v.smp.exclude(n.name, "SIGKILLed")
				n.agent.Kill()
			}
		}
		waitFor(t, 10*time.Second, surv.name+" to release the VIP", func() bool {
			h, err := v.holdsNow(surv)
			return err == nil && !h
		})
		t.Logf("[release] %s released the VIP %v after losing both peers", surv.name, time.Since(lost).Round(time.Millisecond))
		time.Sleep(2 * time.Second)
		if hs := v.holders(); len(hs) != 0 {
			t.Errorf("[release] without quorum the VIP is on %v, want nowhere", hs)
		}
		vs, err := v.vipStatus(surv)
		if err != nil || vs.Hold || !strings.Contains(vs.Reason, "release") {
			t.Errorf("[release] vip status on %s: %+v %v", surv.name, vs, err)
		}
		st, err := v.status(surv)
		if err != nil || st.Quorum || !slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "degraded") }) {
			t.Errorf("[release] cluster status on %s: %+v %v", surv.name, st, err)
		}
		if out, err := v.cli(surv, "vip", "claim"); err == nil {
			t.Errorf("[release] vip claim without --force succeeded: %s", out)
		}
		claimed := time.Now()
		if out, err := v.cli(surv, "vip", "claim", "--force"); err != nil {
			t.Fatalf("vip claim --force: %v\n%s", err, out)
		}
		waitFor(t, 5*time.Second, surv.name+" to hold the VIP after claim --force", func() bool {
			h, err := v.holdsNow(surv)
			return err == nil && h
		})
		t.Logf("[release] vip claim --force: VIP on %s after %v", surv.name, time.Since(claimed).Round(time.Millisecond))
		vs, err = v.vipStatus(surv)
		if err != nil || !vs.Hold || !vs.Forced {
			t.Errorf("[release] vip status after the forced claim: %+v %v", vs, err)
		}
		waitFor(t, 5*time.Second, "the client served through "+surv.name, func() bool {
			st, body, err := get(client, v.vipURL(8080))
			return err == nil && st == 200 && v.byAddr[strings.TrimSpace(body)] == surv.name
		})
		v.smp.check(t, "release")
		v.checkGARPs("release", lost)
	})
	v.t = t
	t.Logf("whole VIP scenario: %v", time.Since(begin).Round(time.Millisecond))
}

// rel formats an offset from T0 with its sign.
func rel(d time.Duration) string {
	d = d.Round(time.Millisecond)
	if d < 0 {
		return d.String()
	}
	return "+" + d.String()
}

// reannounced reports whether name sent a burst (two GARP requests less
// than 500 ms apart; the refresh is 2 s) that started in [from, to].
func (v *vipLab) reannounced(name string, from, to time.Time) (time.Time, bool) {
	var reqs []time.Time
	for _, f := range v.arp.since(from) {
		if f.op == 1 && v.byMAC[f.mac] == name && !f.at.After(to) {
			reqs = append(reqs, f.at)
		}
	}
	for k := 1; k < len(reqs); k++ {
		if reqs[k].Sub(reqs[k-1]) < 500*time.Millisecond {
			return reqs[k-1], true
		}
	}
	return time.Time{}, false
}

// ownershipLog returns the last "VIP ownership changed" line of a node's
// log.
func ownershipLog(out string) string {
	last := ""
	for line := range strings.Lines(out) {
		if strings.Contains(line, "VIP ownership changed") {
			last = strings.TrimSpace(line)
		}
	}
	return last
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
