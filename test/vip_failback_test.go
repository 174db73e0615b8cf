package test

import (
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVIPFailback: priorities 200/100/100. The preferred owner lb1 is
// killed, the VIP moves; lb1 restarts, and takes the VIP back once it has
// been fit for preempt_delay, not before, in one planned hand-over (no
// two-holder sample, the client loses at most what a drain may lose), and
// the VIP then stays on it.
func TestVIPFailback(t *testing.T) {
	const delay = 3 * time.Second
	v := newVIPLab(t)
	all := v.nodes
	lb1 := v.node("lb1")

	// lb1 gets priority 200: rewrite its node config and restart its
	// (still standalone) agent.
	if err := lb1.agent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := lb1.agent.WaitTimeout(15 * time.Second); err != nil {
		t.Logf("lb1's standalone agent exited: %v", err)
	}
	b, err := os.ReadFile(lb1.nodePath)
	if err != nil {
		t.Fatal(err)
	}
	nc := strings.Replace(string(b), "vip: {interface: eth0}", "vip: {interface: eth0, priority: 200}", 1)
	if nc == string(b) {
		t.Fatalf("no vip section to set the priority in:\n%s", b)
	}
	writeFile(t, lb1.nodePath, nc)
	v.startAgent(lb1)

	owner := v.form()
	// A short preempt_delay: the same document with one more line.
	lb := v.dir + "/lb.yaml"
	doc, err := os.ReadFile(lb)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, lb, strings.TrimRight(string(doc), "\n")+"\n  preempt_delay: 3s\n")
	if out, err := v.cli(v.nodes[1], "config", "apply", "-f", lb); err != nil {
		t.Fatalf("config apply (preempt_delay): %v\n%s", err, out)
	}
	if owner != "lb1" {
		// lb1 initialised the cluster, so it leads; were it not so, it
		// takes over after the delay.
		waitFor(t, delay+15*time.Second, "lb1 to hold the VIP", func() bool { h, _ := v.holdsNow(lb1); return h })
	}
	// A changed vip section restarts VIP control, which claims again once
	// the leader's lease is confirmed: wait for the address to be back.
	waitFor(t, 10*time.Second, "lb1 to hold the VIP after the change", func() bool {
		vs, err := v.vipStatus(lb1)
		return err == nil && vs.Hold && len(vs.Reconcile.Actual) > 0 && vs.Reconcile.LastError == ""
	})
	v.checkOwner("lb1", all)
	v.smp.check(t, "formation")

	// Kill the preferred owner: the VIP moves to lb2 or lb3.
	v.smp.exclude("lb1", "SIGKILLed")
	lb1.agent.Kill()
	next, _ := v.waitHolder(15*time.Second, "after lb1 was killed", "lb1")
	var live []*lbNode
	for _, n := range all {
		if n != lb1 {
			live = append(live, n)
		}
	}
	v.checkOwner(next, live)
	waitFor(t, 10*time.Second, next+" to declare lb1 dead", func() bool {
		st, err := v.status(v.node(next))
		return err == nil && slices.ContainsFunc(st.Nodes, func(ns nodeStatusJSON) bool {
			return ns.Name == "lb1" && ns.Gossip == "dead"
		})
	})

	// Restart lb1 with the client stream running.
	p := v.startProbe(v.vipURL(8080), 3000)
	restart := time.Now()
	v.smp.excludeUntilDrop("lb1", "restarted with a stale VIP")
	v.startAgent(lb1)
	waitFor(t, 10*time.Second, "restarted lb1 to drop the stale VIP", func() bool {
		_, ok := v.smp.dropTime("lb1")
		return ok
	})
	var back time.Time
	waitFor(t, delay+20*time.Second, "lb1 to take the VIP back", func() bool {
		h, _ := v.holdsNow(lb1)
		back = time.Now()
		return h
	})
	waitFor(t, 10*time.Second, "the client served through lb1", func() bool { return p.ServedBy(back, "lb1") })
	time.Sleep(1500 * time.Millisecond)
	s := p.Finish(restart)
	t.Logf("[failback] lb1 restarted at T0, back on the VIP by T0%s (preempt_delay %v); %s", rel(back.Sub(restart)), delay, s)
	for _, f := range s.Fails {
		t.Logf("[failback]   failed request: %s", f)
	}
	if back.Sub(restart) < delay {
		t.Errorf("[failback] lb1 took the VIP back %v after its restart, before preempt_delay %v", back.Sub(restart), delay)
	}
	if s.Failed > 0 {
		t.Errorf("[failback] %d of %d requests failed (e.g. %s), want none (a planned hand-over)", s.Failed, s.Sent, s.SomeErr)
	}
	if s.LastVia != "lb1" {
		t.Errorf("[failback] the last request was served through %q, want lb1", s.LastVia)
	}
	if h := handOverLog(v.node(next).agent.Output()); h != "" {
		t.Logf("[failback] %s's log: %s", next, h)
	} else {
		t.Errorf("[failback] %s's log does not say why it handed the VIP over:\n%s", next, tail(v.node(next).agent.Output(), 4000))
	}
	v.checkOwner("lb1", all)

	// No double interruption: the VIP stays on lb1.
	for end := time.Now().Add(2 * delay); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if h, _ := v.holdsNow(lb1); !h {
			t.Fatalf("[failback] lb1 lost the VIP again: holders %v", v.holders())
		}
	}
	v.smp.check(t, "failback")
}

// handOverLog returns the last health or priority hand-over logged.
func handOverLog(out string) string {
	last := ""
	for line := range strings.Lines(out) {
		if strings.Contains(line, "handing leadership and the VIP over") {
			last = strings.TrimSpace(line)
		}
	}
	return last
}
