// Package failover is issue 5's failover benchmark (`make bench-failover`):
// pull the VIP holder out of a three-node cluster in network namespaces,
// (a) SIGKILL and (b) cable pull, ten times each, and measure what a client
// that opens a new connection every 10 ms sees; the same for keepalived
// (Debian package) in the same namespaces as the yardstick, with its
// defaults and tuned. It is not a test: it runs only when
// FULCRUM_BENCH_FAILOVER=1, which only the make target sets.
//
// Knobs (environment): FAILOVER_RUNS (runs per scenario, default 10),
// FAILOVER_EXTRA_RUNS (runs of keepalived's kill-the-daemon-only variant,
// default 3), FAILOVER_SYSTEMS (comma-separated subset of fulcrum,
// keepalived-default, keepalived-tuned), FAILOVER_OUT (also write the
// table to this file).
package failover

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// scenario is one way of taking the holder away.
type scenario string

const (
	killAll    scenario = "a: SIGKILL"              // the daemon and, for keepalived, the node's HTTP server
	cablePull  scenario = "b: cable pull"           // the holder's switch port down
	killDaemon scenario = "a': SIGKILL daemon only" // keepalived only; its HTTP server keeps running
)

// system is a cluster under test in a lab: Fulcrum or keepalived.
type system interface {
	// pull takes node i (the holder) away; restore brings it back as a
	// healthy non-holder.
	pull(t *testing.T, i int, sc scenario)
	restore(t *testing.T, i int, sc scenario)
}

type runResult struct {
	gap, silence, slowest, takeover, served time.Duration
	failed                                  int
}

type row struct {
	system   string
	sc       scenario
	runs     []runResult
	raw, two int // two-holder rounds: raw, and confirmed by the next round
	note     string
}

func envInt(t *testing.T, k string, def int) int {
	v := os.Getenv(k)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", k, v)
	}
	return n
}

func binary(t *testing.T) string {
	if b := os.Getenv("FULCRUM_BIN"); b != "" {
		return b
	}
	out := filepath.Join(t.TempDir(), "fulcrum")
	if b, err := exec.Command("go", "build", "-o", out, "../../../cmd/fulcrum").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func TestFailoverBench(t *testing.T) {
	if os.Getenv("FULCRUM_BENCH_FAILOVER") != "1" {
		t.Skip("the failover benchmark runs only through `make bench-failover` (FULCRUM_BENCH_FAILOVER=1)")
	}
	netlab.Require(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Fatal("keepalived is not installed (make bench-failover installs it: test/deps.sh failover)")
	}
	bin := binary(t)
	runs := envInt(t, "FAILOVER_RUNS", 10)
	extra := envInt(t, "FAILOVER_EXTRA_RUNS", 3)
	want := map[string]bool{"fulcrum": true, "keepalived-default": true, "keepalived-tuned": true}
	if s := os.Getenv("FAILOVER_SYSTEMS"); s != "" {
		clear(want)
		for _, n := range strings.Split(s, ",") {
			want[strings.TrimSpace(n)] = true
		}
	}
	begin := time.Now()
	var rows []row
	if want["fulcrum"] {
		t.Run("fulcrum", func(t *testing.T) {
			rows = append(rows, benchSystem(t, "Fulcrum", func(b *bench) system { return newFulcrum(t, b, bin) },
				[]scenario{killAll, cablePull}, runs, 0)...)
		})
	}
	for _, tuned := range []bool{false, true} {
		name := map[bool]string{false: "keepalived-default", true: "keepalived-tuned"}[tuned]
		label := map[bool]string{false: "keepalived, defaults (VRRPv2, advert_int 1)", true: "keepalived, tuned (VRRPv3, advert_int 0.1)"}[tuned]
		if !want[name] {
			continue
		}
		t.Run(name, func(t *testing.T) {
			rows = append(rows, benchSystem(t, label, func(b *bench) system { return newKeepalived(t, b, bin, tuned) },
				[]scenario{killAll, cablePull, killDaemon}, runs, extra)...)
		})
	}
	table := renderTable(rows)
	kv, _ := exec.Command("keepalived", "--version").CombinedOutput()
	kver, _, _ := strings.Cut(string(kv), "\n")
	uname, _ := exec.Command("uname", "-r").Output()
	head := fmt.Sprintf("failover benchmark: fulcrum %s, %s, kernel %s, %d CPUs, %s, took %v\n",
		os.Getenv("FULCRUM_VERSION"), strings.TrimSpace(kver), strings.TrimSpace(string(uname)), runtime.NumCPU(),
		begin.Format("2006-01-02"), time.Since(begin).Round(time.Second))
	fmt.Print("\n" + head + "\n" + table)
	if out := os.Getenv("FAILOVER_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(head+"\n"+table), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// bench is what every system gets: the lab, its node names and the
// sampler.
type bench struct {
	lab   *netlab.Lab
	names []string
	smp   *sampler
	url   string
}

func benchSystem(t *testing.T, label string, mk func(*bench) system, scs []scenario, runs, extra int) []row {
	lab, err := netlab.New(t, netlab.Options{Prefix: "fo", Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{lab: lab, url: "http://" + netip4Port(lab, 8080) + "/"}
	var nss []string
	for _, h := range lab.Nodes() {
		b.names = append(b.names, h.Name())
		nss = append(nss, h.NS())
	}
	b.smp, err = startSampler(lab.VIP(), b.names, nss, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.smp.close)
	b.smp.setLabel("setup")
	sys := mk(b)
	var rows []row
	for _, sc := range scs {
		n := runs
		if sc == killDaemon {
			n = extra
		}
		if n == 0 {
			continue
		}
		r := row{system: label, sc: sc}
		b.smp.setLabel(label + "/" + string(sc))
		for k := 1; k <= n; k++ {
			res, ok := b.once(t, sys, sc, fmt.Sprintf("%s %s #%d", label, sc, k))
			if !ok {
				r.note = "run failed"
				break
			}
			r.runs = append(r.runs, res)
		}
		r.raw, r.two = b.smp.counts(label + "/" + string(sc))
		rows = append(rows, r)
		if r.note != "" {
			break
		}
	}
	rounds, errs, lastE := b.smp.stats()
	t.Logf("sampler: %d rounds, %d read errors (%v)", rounds, errs, lastE)
	return rows
}

func netip4Port(lab *netlab.Lab, port uint16) string {
	return fmt.Sprintf("%s:%d", lab.VIP(), port)
}

// once runs one pull: the stream starts, the holder is pulled at T0, and
// it runs until another node holds the VIP and served the client, plus a
// second; then the pulled node is restored.
func (b *bench) once(t *testing.T, sys system, sc scenario, what string) (runResult, bool) {
	t.Helper()
	owner, _, err := b.smp.waitHolder(20*time.Second, -1)
	if err != nil {
		t.Errorf("[%s] before the pull: %v", what, err)
		return runResult{}, false
	}
	// The client (netlab.Probe): a request every 10 ms on a new connection;
	// every node's server answers with the node's name. At most 40 s.
	p := netlab.StartProbe(b.lab, b.url, 4000, func(body string) string { return body })
	pre := time.Now()
	if _, ok := p.WaitServed(pre, b.names[owner], 5*time.Second); !ok {
		s := p.Finish(pre)
		t.Errorf("[%s] the client is not served through the holder %s before the pull: %v %v", what, b.names[owner], s, s.Fails)
		return runResult{}, false
	}
	// A random phase against the systems' timers (VRRP adverts, Raft
	// heartbeats): a loop paced by the previous failover would otherwise
	// pull at the same point of the advert cycle every time.
	time.Sleep(300*time.Millisecond + rand.N(time.Second))
	t0 := time.Now()
	sys.pull(t, owner, sc)
	next, seen, err := b.smp.waitHolder(30*time.Second, owner)
	if err != nil {
		p.Finish(t0)
		t.Errorf("[%s] after the pull of %s: %v", what, b.names[owner], err)
		return runResult{}, false
	}
	served, ok := p.WaitServed(t0, b.names[next], 30*time.Second)
	if !ok {
		s := p.Finish(t0)
		t.Errorf("[%s] the client was not served through the new holder %s: %v %v", what, b.names[next], s, s.Fails)
		return runResult{}, false
	}
	time.Sleep(time.Second)
	s := p.Finish(t0)
	r := runResult{gap: s.Gap, silence: s.Silence, slowest: s.Slowest, failed: s.Failed, takeover: seen.Sub(t0), served: served.Sub(t0)}
	t.Logf("[%s] %s pulled at T0: VIP on %s by T0+%v, client served through it by T0+%v; %v",
		what, b.names[owner], b.names[next], ms(r.takeover), ms(r.served), s)
	for _, f := range s.Fails {
		t.Logf("[%s]   failed: %s", what, f)
	}
	sys.restore(t, owner, sc)
	return r, !t.Failed()
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func median[T int | time.Duration](xs []T) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return float64(s[m])
	}
	return (float64(s[m-1]) + float64(s[m])) / 2
}

func secs(ns float64) string { return fmt.Sprintf("%.2f s", ns/1e9) }

func renderTable(rows []row) string {
	var b strings.Builder
	b.WriteString("| system | scenario | runs | gap: median | gap: worst | longest without a completed request: median / worst | lost requests: median (max) | slowest success: worst | VIP on the new node: median | two-holder samples |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		var gaps, sil, slow, tk []time.Duration
		var lost []int
		for _, x := range r.runs {
			gaps, sil, slow, tk = append(gaps, x.gap), append(sil, x.silence), append(slow, x.slowest), append(tk, x.takeover)
			lost = append(lost, x.failed)
		}
		runs := fmt.Sprint(len(r.runs))
		if r.note != "" {
			runs += " (" + r.note + ")"
		}
		two := fmt.Sprint(r.raw)
		if r.raw > 0 {
			two += fmt.Sprintf(" (%d confirmed by the next round)", r.two)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s / %s | %g (%d) | %s | %s | %s |\n",
			r.system, r.sc, runs, secs(median(gaps)), secs(float64(slices.Max(append(gaps, 0)))),
			secs(median(sil)), secs(float64(slices.Max(append(sil, 0)))),
			median(lost), slices.Max(append(lost, 0)), secs(float64(slices.Max(append(slow, 0)))), secs(median(tk)), two)
	}
	return b.String()
}
