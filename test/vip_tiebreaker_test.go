package test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// TestVIPTiebreaker drives the two-node `without_quorum: tiebreaker` rule
// of issue 5 end to end: lb1 and lb2 form a cluster whose tiebreaker is the
// client's lab address (ICMP echo, probed every 500 ms by each node).
//
//  1. The non-holder is killed: the holder loses quorum (two voters) and
//     keeps the VIP through its step-down; the client keeps being served.
//     The killed node restarts and the cluster has a quorum again.
//  2. The holder is killed (SIGKILL, its stale address deleted as if the box
//     were gone): the survivor claims the VIP once gossip declares the
//     holder dead, while the tiebreaker answers; the gap is measured.
//  3. With the peer still dead, the tiebreaker stops answering ICMP: the
//     survivor releases the VIP within a few probe periods; it answers
//     again: the survivor claims again.
//
// The never-two-holders sampler and the GARP watcher of vip_test.go run
// throughout (killed nodes excluded).
func TestVIPTiebreaker(t *testing.T) {
	netlab.Require(t)
	begin := time.Now()
	v := newTiebreakerLab(t)
	all := v.nodes
	tb := v.lab.Client()
	client := v.lab.HTTPClient(tb)
	other := func(name string) *lbNode {
		for _, n := range all {
			if n.name != name {
				return n
			}
		}
		t.Fatalf("no node other than %s", name)
		return nil
	}
	reason := func(n *lbNode) string {
		vs, err := v.vipStatus(n)
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("hold=%v reason=%q", vs.Hold, vs.Reason)
	}

	owner := v.formTiebreaker()
	v.checkOwner(owner, all)
	if st, body, err := get(client, v.vipURL(8080)); err != nil || st != 200 || v.byAddr[strings.TrimSpace(body)] != owner {
		t.Fatalf("GET %s: %d %q %v, want an answer through %s", v.vipURL(8080), st, body, err, owner)
	}
	v.smp.check(t, "formation")
	v.checkGARPs("formation", begin)

	// 1. Kill the non-holder: the holder keeps the VIP without quorum.
	start := time.Now()
	holder, peer := v.node(owner), other(owner)
	p := v.startProbe(v.vipURL(8080), 1000)
	time.Sleep(200 * time.Millisecond)
	v.smp.exclude(peer.name, "SIGKILLed")
	killed := time.Now()
	peer.agent.Kill()
	<-peer.agent.Done()
	waitFor(t, 10*time.Second, holder.name+" to keep the VIP without quorum", func() bool {
		vs, err := v.vipStatus(holder)
		return err == nil && vs.Hold && strings.Contains(vs.Reason, "no quorum: kept")
	})
	t.Logf("[peer killed] %s lost quorum and kept the VIP %v after %s was killed: %s",
		holder.name, time.Since(killed).Round(time.Millisecond), peer.name, reason(holder))
	time.Sleep(1500 * time.Millisecond) // a few tiebreaker probe periods
	s := p.Finish(killed)
	t.Logf("[peer killed] client: %s", s)
	for _, f := range s.Fails {
		t.Logf("[peer killed]   failed request: %s", f)
	}
	if s.Failed != 0 || s.LastVia != holder.name {
		t.Errorf("[peer killed] %d of %d requests failed (e.g. %s), last served through %q: want none failed, all through %s",
			s.Failed, s.Sent, s.SomeErr, s.LastVia, holder.name)
	}
	if h, err := v.holdsNow(holder); err != nil || !h {
		t.Errorf("[peer killed] %s's eth0 does not carry the VIP (%v): %s", holder.name, err, reason(holder))
	}
	if st, err := v.status(holder); err != nil || st.Quorum ||
		!slices.ContainsFunc(st.Warnings, func(w string) bool { return strings.Contains(w, "degraded") }) {
		t.Errorf("[peer killed] cluster status on %s: want no quorum and a degraded warning: %+v %v", holder.name, st, err)
	}
	// Restart the peer: quorum returns, one holder (whichever leads).
	v.smp.excludeUntilDrop(peer.name, "restarted")
	v.startAgent(peer)
	v.waitAlive(holder, all...)
	// With quorum back, whichever node wins the election takes the VIP
	// (the tiebreaker holder may still hold it for a moment): wait for
	// the leader to be the one holder.
	waitFor(t, 15*time.Second, "the leader to be the VIP's one holder", func() bool {
		st, err := v.status(holder)
		if err != nil || st.Leader == "" {
			return false
		}
		h, err := v.holdsNow(v.node(st.Leader))
		if err != nil || !h {
			return false
		}
		owner = st.Leader
		for _, n := range all {
			if n.name != owner {
				if other, err := v.holdsNow(n); err != nil || other {
					return false
				}
			}
		}
		return true
	})
	v.checkOwner(owner, all)
	t.Logf("[peer killed] %s restarted; the VIP is on %s with quorum", peer.name, owner)
	v.smp.check(t, "peer killed")
	v.checkGARPs("peer killed", start)
	if t.Failed() {
		return
	}

	// 2. Kill the holder: the survivor claims once gossip declares it dead.
	start = time.Now()
	dead, surv := v.node(owner), other(owner)
	p = v.startProbe(v.vipURL(8080), 1500)
	time.Sleep(300 * time.Millisecond)
	if !p.ServedBy(time.Time{}, dead.name) {
		p.Finish(time.Now())
		t.Fatalf("[holder killed] the client is not served through %s before the kill", dead.name)
	}
	v.smp.exclude(dead.name, "SIGKILLed")
	t0 := time.Now()
	dead.agent.Kill()
	<-dead.agent.Done()
	// The kernel keeps the address of a killed agent: delete it, as if the
	// box itself were gone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	out, err := exec.CommandContext(ctx, "ip", "-n", dead.host.NS(), "addr", "del", v.vip.String()+"/24", "dev", "eth0").CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("ip addr del on %s: %v: %s", dead.name, err, out)
	}
	claimedBy, seen := v.waitHolder(15*time.Second, "the survivor to claim", dead.name)
	if claimedBy != surv.name {
		t.Fatalf("[holder killed] the VIP is on %s", claimedBy)
	}
	st, err := v.status(surv)
	declared := err == nil && slices.ContainsFunc(st.Nodes, func(ns nodeStatusJSON) bool {
		return ns.Name == dead.name && ns.Gossip == "dead"
	})
	waitFor(t, 10*time.Second, "the client served through "+surv.name, func() bool { return p.ServedBy(t0, surv.name) })
	time.Sleep(time.Second)
	s = p.Finish(t0)
	vs, err := v.vipStatus(surv)
	// Claimed because the holder was declared dead, then kept without
	// quorum while the tiebreaker answers.
	if err != nil || !vs.Hold || !strings.Contains(vs.Reason, "tiebreaker answers") {
		t.Errorf("[holder killed] vip status on %s: %+v %v, want held while the tiebreaker answers", surv.name, vs, err)
	}
	garp, _ := v.firstGARP(surv.name, t0)
	t.Logf("[holder killed] %s killed at T0: VIP on %s's eth0 by T0%s, first GARP at T0%s, %s shows it dead in cluster status: %v",
		dead.name, surv.name, rel(seen.Sub(t0)), rel(garp.Sub(t0)), surv.name, declared)
	t.Logf("[holder killed] client: %s", s)
	for _, f := range s.Fails {
		t.Logf("[holder killed]   failed request: %s", f)
	}
	if s.LastVia != surv.name {
		t.Errorf("[holder killed] the last request was served through %q, want %s", s.LastVia, surv.name)
	}
	// The claim is stable: the survivor keeps the VIP, without flapping
	// and without a storm of announcements (one burst of 3, both forms).
	if drops := v.steady(surv, true, 1500*time.Millisecond); drops > 0 {
		t.Errorf("[holder killed] %s dropped the VIP %d times in 1.5 s after claiming it (ownership log: %d changes since T0; last: %s)",
			surv.name, drops, ownershipChanges(surv.agent.Output(), t0), ownershipLog(surv.agent.Output()))
	}
	if n := len(v.garpsFrom(surv.name, t0)); n > 12 {
		t.Errorf("[holder killed] %s sent %d gratuitous ARPs for the VIP since T0, want one burst (burst 3)", surv.name, n)
	}
	v.smp.check(t, "holder killed")
	v.checkGARPs("holder killed", start)
	if t.Failed() {
		return
	}

	// 3. The tiebreaker stops answering ICMP: the survivor releases; it
	// answers again: the survivor claims again.
	start = time.Now()
	icmp := func(ignore string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if out, err := v.lab.Exec(ctx, tb, "sysctl", "-w", "net.ipv4.icmp_echo_ignore_all="+ignore); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	t.Cleanup(func() { icmp("0") })
	if vs, err := v.vipStatus(surv); err != nil || !vs.Hold {
		t.Errorf("[tiebreaker silent] before the tiebreaker goes silent, vip status on %s: %+v %v", surv.name, vs, err)
	}
	muted := time.Now()
	icmp("1")
	waitFor(t, 3*time.Second, surv.name+" to release the VIP (tiebreaker silent)", func() bool {
		h, err := v.holdsNow(surv)
		return err == nil && !h
	})
	released := time.Now()
	t.Logf("[tiebreaker silent] %s released the VIP %v after the tiebreaker stopped answering (probe period 500 ms): %s",
		surv.name, released.Sub(muted).Round(time.Millisecond), reason(surv))
	time.Sleep(1500 * time.Millisecond)
	if hs := v.holders(); slices.Contains(hs, surv.name) {
		t.Errorf("[tiebreaker silent] the VIP is back on %v while the tiebreaker is silent", hs)
	}
	if vs, err := v.vipStatus(surv); err != nil || vs.Hold || !strings.Contains(vs.Reason, "tiebreaker does not answer") {
		t.Errorf("[tiebreaker silent] vip status on %s: %+v %v", surv.name, vs, err)
	}
	restored := time.Now()
	icmp("0")
	waitFor(t, 3*time.Second, surv.name+" to claim again (tiebreaker back)", func() bool {
		h, err := v.holdsNow(surv)
		return err == nil && h
	})
	t.Logf("[tiebreaker back] %s claimed the VIP again %v after the tiebreaker answered again: %s",
		surv.name, time.Since(restored).Round(time.Millisecond), reason(surv))
	if drops := v.steady(surv, true, 1500*time.Millisecond); drops > 0 {
		t.Errorf("[tiebreaker back] %s dropped the VIP %d times in 1.5 s after claiming it again", surv.name, drops)
	}
	waitFor(t, 5*time.Second, "the client served through "+surv.name, func() bool {
		st, body, err := get(client, v.vipURL(8080))
		return err == nil && st == 200 && v.byAddr[strings.TrimSpace(body)] == surv.name
	})
	v.smp.check(t, "tiebreaker")
	v.checkGARPs("tiebreaker", start)
	t.Logf("whole tiebreaker scenario: %v", time.Since(begin).Round(time.Millisecond))
}

// newTiebreakerLab is newVIPLab with two nodes.
func newTiebreakerLab(t *testing.T) *vipLab { return newVIPLabOf(t, "vtb", 2) }

// formTiebreaker forms the two-node cluster with the CLI, applies the
// tiebreaker VIP config and returns the first holder.
func (v *vipLab) formTiebreaker() string {
	t := v.t
	v.initAndJoin()
	lb := filepath.Join(v.dir, "lb.yaml")
	writeFile(t, lb, fmt.Sprintf(`global: {hard_stop_after: 2s}
defaults: {mode: http, retries: 2, redispatch: true, timeouts: {connect: 1s, server: 5s}}
frontends:
  - {name: web, bind: ["0.0.0.0:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: %q}
vip:
  mode: active-passive
  addresses: ["%s/24"]
  without_quorum: tiebreaker
  tiebreaker: %s
  garp: {burst: 3, interval: 100ms}
`, v.lab.Client().HostPort(9001), v.vip, v.lab.Client().Addr()))
	start := time.Now()
	if out, err := v.cli(v.nodes[1], "config", "apply", "-f", lb); err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	owner, seen := v.waitHolder(10*time.Second, "first VIP holder")
	t.Logf("VIP %s on %s's eth0 %v after config apply started (tiebreaker %s)", v.vip, owner, seen.Sub(start).Round(time.Millisecond), v.lab.Client().Addr())
	return owner
}

// steady polls n's eth0 for d and counts the readings that differ from
// want (0: n held, or did not hold, the VIP throughout).
func (v *vipLab) steady(n *lbNode, want bool, d time.Duration) int {
	v.t.Helper()
	bad := 0
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		h, err := v.holdsNow(n)
		if err != nil {
			v.t.Fatal(err)
		}
		if h != want {
			bad++
		}
	}
	return bad
}

// garpsFrom returns the GARPs for the VIP that name sent at or after t.
func (v *vipLab) garpsFrom(name string, t time.Time) []garpFrame {
	var out []garpFrame
	for _, f := range v.arp.since(t) {
		if v.byMAC[f.mac] == name {
			out = append(out, f)
		}
	}
	return out
}

// ownershipChanges counts the "VIP ownership changed" lines of a node's
// log logged at or after t (the slog text timestamp, time=...).
func ownershipChanges(out string, t time.Time) int {
	k := 0
	for line := range strings.Lines(out) {
		if !strings.Contains(line, "VIP ownership changed") {
			continue
		}
		if i := strings.Index(line, "time="); i >= 0 {
			f := strings.Fields(line[i+len("time="):])
			if len(f) > 0 {
				if at, err := time.Parse(time.RFC3339Nano, f[0]); err == nil && at.Before(t) {
					continue
				}
			}
		}
		k++
	}
	return k
}
