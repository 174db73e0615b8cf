package netlab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

var hostArpAccept string

func TestMain(m *testing.M) {
	b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_accept")
	hostArpAccept = strings.TrimSpace(string(b))
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// fulcrum returns the fulcrum binary: $FULCRUM_BIN, or one built once per
// test binary into a temp dir.
func fulcrum(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("FULCRUM_BIN"); b != "" {
		return b
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "netlab-bin")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "fulcrum")
		out, err := exec.Command("go", "build", "-o", binPath, "../../cmd/fulcrum").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// waitFor polls cond every 20 ms up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), err
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

// netnsNames lists `ip netns list` names.
func netnsNames(t *testing.T) []string {
	var names []string
	for line := range strings.Lines(run(t, "ip", "netns", "list")) {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	slices.Sort(names)
	return names
}

func withPrefix(names []string, lab string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, lab+"-") {
			out = append(out, n)
		}
	}
	return out
}

// callerLinks is the caller namespace's links: name, MAC and flags (no
// counters), one line each.
func callerLinks(t *testing.T) string {
	return run(t, "ip", "-br", "link", "show")
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// a zombie (state Z) has exited
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

// TestLab is the main end-to-end check: a 3-node lab comes up with the
// advertised addresses, MACs and sysctls; every host reaches every other
// through the bridge (real fulcrum demo-backends, dialled with the
// namespace HTTP client); a server sees the client's lab address; a pulled
// cable isolates a node and plugging it back restores it; KillAll and
// Close leave nothing behind, in the caller's namespace included.
func TestLab(t *testing.T) {
	netlab.Require(t)
	bin := fulcrum(t)
	nsBefore := netnsNames(t)
	linksBefore := callerLinks(t)

	t0 := time.Now()
	lab, err := netlab.New(t, netlab.Options{Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lab %s (%v) up in %v", lab.Name(), lab.Subnet(), time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	// names, addresses, MACs
	want := []string{lab.Name() + "-c1", lab.Name() + "-n1", lab.Name() + "-n2", lab.Name() + "-n3", lab.Name() + "-sw"}
	if got := withPrefix(netnsNames(t), lab.Name()); !slices.Equal(got, want) {
		t.Fatalf("namespaces %v, want %v", got, want)
	}
	if len(lab.Name()) > 12 {
		t.Errorf("lab name %q longer than 12", lab.Name())
	}
	sub := lab.Subnet().Addr().As4()
	for i, h := range lab.Nodes() {
		if a := h.Addr().As4(); a[3] != byte(11+i) || !lab.Subnet().Contains(h.Addr()) {
			t.Errorf("%s has %v, want .%d in %v", h.Name(), h.Addr(), 11+i, lab.Subnet())
		}
	}
	if a := lab.Client().Addr().As4(); a[3] != 50 {
		t.Errorf("client %v, want .50", lab.Client().Addr())
	}
	if a := lab.VIP().As4(); a[3] != 100 || a[2] != sub[2] {
		t.Errorf("VIP %v, want .100 of %v", lab.VIP(), lab.Subnet())
	}
	for _, h := range append(lab.Nodes(), lab.Client()) {
		out, err := lab.Exec(ctx, h, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, h.Addr().String()+"/24") {
			t.Errorf("%s: addr: %v %q", h, err, out)
		}
		out, err = lab.Exec(ctx, h, "ip", "-o", "link", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, "link/ether "+h.MAC().String()) || !strings.Contains(out, "LOWER_UP") {
			t.Errorf("%s: link (want MAC %s, carrier): %v %q", h, h.MAC(), err, out)
		}
		out, err = lab.Exec(ctx, h, "ip", "-o", "link", "show", "dev", "lo")
		if err != nil || !strings.Contains(out, ",UP") {
			t.Errorf("%s: lo not up: %v %q", h, err, out)
		}
		out, err = lab.Exec(ctx, h, "cat",
			"/proc/sys/net/ipv6/conf/all/disable_ipv6", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
			"/proc/sys/net/ipv4/conf/all/arp_accept", "/proc/sys/net/ipv4/conf/all/rp_filter",
			"/proc/sys/net/ipv4/conf/default/rp_filter", "/proc/sys/net/ipv4/ip_forward")
		if got := strings.Fields(out); err != nil || !slices.Equal(got, []string{"1", "1", "0", "0", "0", "0"}) {
			t.Errorf("%s: sysctls (ipv6 off, arp_accept/rp_filter/ip_forward 0): %v %q", h, err, out)
		}
		out, err = lab.Exec(ctx, h, "ip", "-o", "-6", "addr", "show")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%s: IPv6 addresses present: %v %q", h, err, out)
		}
	}
	out, err := lab.Exec(ctx, lab.Switch(), "ip", "-o", "link", "show", "master", "br0")
	if err != nil || strings.Count(out, "\n") != 4 {
		t.Errorf("switch ports of br0: %v\n%s", err, out)
	}

	// a demo-backend in every node and in the client
	hosts := append(lab.Nodes(), lab.Client())
	procs := map[*netlab.Host]*netlab.Proc{}
	for _, h := range hosts {
		procs[h] = lab.Start(h, nil, bin, "demo-backend", "--listen", h.HostPort(8080), "--name", h.Name())
	}
	clients := map[*netlab.Host]*http.Client{}
	for _, h := range hosts {
		clients[h] = lab.HTTPClient(h)
	}
	for _, h := range hosts {
		waitFor(t, 5*time.Second, "demo-backend on "+h.Name(), func() bool {
			_, err := get(clients[h], "http://"+h.HostPort(8080)+"/healthz") // its own namespace
			return err == nil
		})
	}
	// everyone reaches everyone else across the bridge
	for _, src := range hosts {
		for _, dst := range hosts {
			if src == dst {
				continue
			}
			body, err := get(clients[src], "http://"+dst.HostPort(8080)+"/")
			if err != nil || body != dst.Name() {
				t.Errorf("%s -> %s: %q %v", src.Name(), dst.Name(), body, err)
			}
		}
	}
	// loopback inside a namespace is that namespace's own
	lo := lab.Start(lab.Node(2), nil, bin, "demo-backend", "--listen", "127.0.0.1:8081", "--name", "n2-lo")
	waitFor(t, 5*time.Second, "demo-backend on n2's loopback", func() bool {
		body, err := get(clients[lab.Node(2)], "http://127.0.0.1:8081/")
		return err == nil && body == "n2-lo"
	})
	if body, err := get(clients[lab.Client()], "http://127.0.0.1:8081/"); err == nil {
		t.Errorf("client reached n2's loopback backend: %q", body)
	}
	if err := lo.Kill(); err != nil {
		t.Error(err)
	}
	if err := lo.WaitTimeout(5 * time.Second); err == nil || !lo.Exited() {
		t.Errorf("after Kill: %v, exited %v", err, lo.Exited())
	}

	// the HTTP client really dials from inside: a server in n1 (a listener
	// opened in n1 by this process) sees the client's lab address
	ln, err := lab.Listen(lab.Node(1), "tcp4", lab.Node(1).HostPort(9000))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, src := range []*netlab.Host{lab.Client(), lab.Node(3)} {
		body, err := get(clients[src], "http://"+lab.Node(1).HostPort(9000)+"/")
		host, _, _ := net.SplitHostPort(body)
		if err != nil || host != src.Addr().String() {
			t.Errorf("remote address seen in n1 for a request from %s: %q %v, want %s", src.Name(), body, err, src.Addr())
		}
	}

	// probes dial from local ports of their own, below the ephemeral
	// range, never the same one twice (two probes of the lab included)
	var mu sync.Mutex
	var ports []string
	for round := range 2 {
		want := 3 * (round + 1)
		probe := netlab.StartProbe(lab, "http://"+lab.Node(1).HostPort(9000)+"/", 3, func(body string) string {
			_, port, _ := net.SplitHostPort(body)
			mu.Lock()
			defer mu.Unlock()
			ports = append(ports, port)
			return port
		})
		waitFor(t, 5*time.Second, "three probe requests served", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(ports) == want
		})
		if sum := probe.Finish(time.Now()); sum.Sent != 3 || sum.Failed != 0 {
			t.Errorf("probe: %v", sum)
		}
	}
	seen := map[string]bool{}
	for _, port := range ports {
		p, err := strconv.Atoi(port)
		if err != nil || p < 10000 || p >= 32000 || seen[port] {
			t.Errorf("probe requests came from local ports %v, want distinct ports in [10000, 32000)", ports)
			break
		}
		seen[port] = true
	}

	// nothing outside the lab is ever dialled
	for _, addr := range []string{"192.0.2.1:80", "localhost:80", "10.0.0.1:80", "[::1]:80"} {
		if c, err := lab.Dial(ctx, lab.Client(), "tcp", addr); err == nil {
			c.Close()
			t.Errorf("Dial %s from the client succeeded, want a refusal", addr)
		}
	}

	// pulled cable: n2 unreachable, the others unaffected; plugged: back
	if err := lab.Cable(lab.Node(2), false); err != nil {
		t.Fatal(err)
	}
	short := lab.HTTPClient(lab.Client())
	short.Timeout = 500 * time.Millisecond
	short.Transport.(*http.Transport).DisableKeepAlives = true
	if body, err := get(short, "http://"+lab.Node(2).HostPort(8080)+"/"); err == nil {
		t.Errorf("n2 answered %q with its cable pulled", body)
	}
	if body, err := get(short, "http://"+lab.Node(1).HostPort(8080)+"/"); err != nil || body != "n1" {
		t.Errorf("n1 with n2's cable pulled: %q %v", body, err)
	}
	if out, err := lab.Exec(ctx, lab.Node(2), "ip", "-o", "link", "show", "dev", "eth0"); err != nil || !strings.Contains(out, "NO-CARRIER") {
		t.Errorf("n2 eth0 with the cable pulled, want NO-CARRIER: %v %q", err, out)
	}
	if err := lab.Cable(lab.Node(2), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n2 back after plugging its cable", func() bool {
		body, err := get(short, "http://"+lab.Node(2).HostPort(8080)+"/")
		return err == nil && body == "n2"
	})
	if err := lab.Cable(lab.Switch(), false); err == nil {
		t.Error("Cable(switch) succeeded")
	}

	// Signal: a graceful stop; KillAll: everything in n3 goes, also a
	// process the lab did not start
	p1 := procs[lab.Node(1)]
	if err := p1.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p1.WaitTimeout(5 * time.Second); err != nil {
		t.Errorf("demo-backend on n1 after SIGTERM: %v\n%s", err, p1.Output())
	}
	if !strings.Contains(p1.Output(), "listening on "+lab.Node(1).HostPort(8080)) {
		t.Errorf("n1 output not captured: %q", p1.Output())
	}
	out, err = lab.Exec(ctx, lab.Node(3), "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatal(err, out)
	}
	orphan, _ := strconv.Atoi(strings.TrimSpace(out))
	if orphan == 0 || !alive(orphan) {
		t.Fatalf("background sleep in n3: %q", out)
	}
	if err := lab.KillAll(lab.Node(3)); err != nil {
		t.Fatal(err)
	}
	// demo-backend stops gracefully on SIGTERM: exit status 0
	if err := procs[lab.Node(3)].WaitTimeout(5 * time.Second); err != nil {
		t.Errorf("n3's demo-backend after KillAll: %v", err)
	}
	if alive(orphan) {
		t.Errorf("untracked sleep %d in n3 survived KillAll", orphan)
	}
	if _, err := get(short, "http://"+lab.Node(3).HostPort(8080)+"/"); err == nil {
		t.Error("n3 still answers after KillAll")
	}

	// Close (what t.Cleanup runs): no process, namespace or caller link left
	out, err = lab.Exec(ctx, lab.Client(), "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatal(err, out)
	}
	orphan, _ = strconv.Atoi(strings.TrimSpace(out))
	running := procs[lab.Node(2)]
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if !running.Exited() || alive(running.Pid()) || alive(orphan) {
		t.Errorf("processes left after Close: tracked exited=%v, untracked sleep alive=%v", running.Exited(), alive(orphan))
	}
	if got := netnsNames(t); !slices.Equal(got, nsBefore) {
		t.Errorf("namespaces after Close %v, before %v", got, nsBefore)
	}
	if got := callerLinks(t); got != linksBefore {
		t.Errorf("caller's links changed:\nbefore:\n%s\nafter:\n%s", linksBefore, got)
	}
	if _, err := os.Stat("/run/netlab/" + lab.Name()); !os.IsNotExist(err) {
		t.Errorf("marker of a closed lab: %v", err)
	}
}

// TestNamespaceSwitchLeavesThreadsHome: many concurrent namespace dials and
// listens later, every thread of this process is still in the caller's
// namespace.
func TestNamespaceSwitchLeavesThreadsHome(t *testing.T) {
	netlab.Require(t)
	lab, err := netlab.New(t, netlab.Options{Nodes: 2, Sysctls: map[string]string{"net.ipv4.conf.all.arp_accept": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	// sysctls are written inside the namespaces, never in the caller's
	out, err := lab.Exec(context.Background(), lab.Node(2), "cat", "/proc/sys/net/ipv4/conf/all/arp_accept")
	if err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("Options.Sysctls arp_accept in n2: %v %q, want 1", err, out)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_accept"); err != nil || strings.TrimSpace(string(b)) != hostArpAccept {
		t.Errorf("caller's arp_accept changed: %q %v, was %q", b, err, hostArpAccept)
	}
	home, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := lab.Listen(lab.Node(1), "tcp4", lab.Node(1).HostPort(7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, c.RemoteAddr())
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		src := lab.Client()
		if i%2 == 1 {
			src = lab.Node(2)
		}
		wg.Go(func() {
			c, err := lab.Dial(ctx, src, "tcp", lab.Node(1).HostPort(7000))
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if host, _, _ := net.SplitHostPort(strings.TrimSpace(line)); err != nil || host != src.Addr().String() {
				errs <- fmt.Errorf("from %s: server saw %q (%v)", src.Name(), line, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatal(tasks, err)
	}
	for _, p := range tasks {
		if ns, err := os.Readlink(p); err == nil && ns != home {
			t.Errorf("thread %s is in %s, not the caller's %s", p, ns, home)
		}
	}
	// a listener in the client's namespace is not reachable at the same
	// address from the caller's namespace: it is bound where it should be
	if _, err := lab.Listen(lab.Client(), "tcp4", lab.Client().HostPort(7000)); err != nil {
		t.Errorf("listen on the client's lab address inside its namespace: %v", err)
	}
	if l, err := net.Listen("tcp4", lab.Client().HostPort(7001)); err == nil {
		l.Close()
		t.Errorf("the caller's namespace has the client's lab address %v", lab.Client().Addr())
	}
}

// TestCleanupWhenTestFails runs a test (this binary, helper mode) that
// builds a lab, starts processes in it and fails: afterwards neither the
// namespaces nor the processes exist.
func TestCleanupWhenTestFails(t *testing.T) {
	netlab.Require(t)
	out, name, pids := runHelper(t, "fail")
	if !strings.Contains(out, "deliberate failure") || !strings.Contains(out, "--- FAIL") {
		t.Fatalf("helper did not fail as planned:\n%s", out)
	}
	if left := withPrefix(netnsNames(t), name); len(left) > 0 {
		t.Errorf("namespaces left by a failed test: %v", left)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d left by a failed test", pid)
		}
	}
}

// TestStaleLabSwept: a test process killed before its cleanups (as by a
// -timeout panic) leaves namespaces; its processes die with it, and the
// next New removes the namespaces.
func TestStaleLabSwept(t *testing.T) {
	netlab.Require(t)
	_, name, pids := runHelper(t, "die")
	if got := withPrefix(netnsNames(t), name); len(got) != 4 {
		t.Fatalf("a killed helper should leave its 4 namespaces behind (to be swept), found %v", got)
	}
	waitFor(t, 3*time.Second, "the killed helper's tracked process to die (Pdeathsig)", func() bool { return !alive(pids[0]) })
	if _, err := netlab.New(t, netlab.Options{Nodes: 1}); err != nil {
		t.Fatal(err)
	}
	if left := withPrefix(netnsNames(t), name); len(left) > 0 {
		t.Errorf("stale namespaces not swept: %v", left)
	}
	if alive(pids[1]) {
		t.Errorf("untracked process %d of the stale lab not killed", pids[1])
	}
}

// runHelper runs TestHelperLab in a child test process in the given mode
// and returns its output, lab name and the PIDs it reported.
func runHelper(t *testing.T, mode string) (string, string, []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperLab$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NETLAB_HELPER="+mode)
	b, err := cmd.CombinedOutput()
	out := string(b)
	if err == nil {
		t.Fatalf("helper (%s) exited 0:\n%s", mode, out)
	}
	var name string
	var pids []int
	for line := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "HELPER "); ok {
			f := strings.Fields(rest)
			name = f[0]
			for _, s := range f[1:] {
				pid, _ := strconv.Atoi(s)
				pids = append(pids, pid)
			}
		}
	}
	if name == "" || len(pids) != 2 {
		t.Fatalf("helper (%s) printed no lab:\n%s", mode, out)
	}
	return out, name, pids
}

// TestHelperLab is not a test by itself: runHelper runs it in a child.
func TestHelperLab(t *testing.T) {
	mode := os.Getenv("NETLAB_HELPER")
	if mode == "" {
		t.Skip("helper for TestCleanupWhenTestFails and TestStaleLabSwept")
	}
	lab, err := netlab.New(t, netlab.Options{Nodes: 2})
	if err != nil {
		t.Fatal(err)
	}
	p := lab.Start(lab.Node(1), nil, "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := lab.Exec(ctx, lab.Node(2), "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("HELPER %s %d %s\n", lab.Name(), p.Pid(), strings.TrimSpace(out))
	os.Stdout.Sync()
	switch mode {
	case "fail":
		t.Fatal("deliberate failure")
	case "die":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(5 * time.Second)
	}
}

func TestRequire(t *testing.T) {
	// Here (root, ip installed) Require passes; elsewhere it skips, or
	// fails with CI=true.
	netlab.Require(t)
}

func TestOptionsValidated(t *testing.T) {
	netlab.Require(t)
	for _, o := range []netlab.Options{{Nodes: 31}, {Nodes: -1}, {Prefix: "Bad"}, {Prefix: "toolong12"}} {
		if lab, err := netlab.New(t, o); err == nil {
			t.Errorf("New(%+v) = %s, want an error", o, lab.Name())
		}
	}
}
