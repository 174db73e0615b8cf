package failover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// keepalived: one VRRP instance per node (multicast on the lab segment,
// all nodes state BACKUP with priorities 150/100/50 and nopreempt, so that
// a restored node does not take the VIP back, as with Fulcrum's default of
// no preferred node), and the fulcrum binary's demo backend on
// 0.0.0.0:8080 answering with the node's name. Defaults: VRRPv2,
// advert_int 1, keepalived's GARP defaults; tuned: vrrp_version 3,
// advert_int 0.1.

type knode struct {
	name string
	host *netlab.Host
	conf string
	dir  string
	prio int
	ka   *netlab.Proc
	web  *netlab.Proc
}

type keepalived struct {
	b      *bench
	bin    string
	tuned  bool
	nodes  []*knode
	advert time.Duration
	stale  int // restarts after which the bench had to remove a VIP keepalived left
}

func newKeepalived(t *testing.T, b *bench, bin string, tuned bool) *keepalived {
	k := &keepalived{b: b, bin: bin, tuned: tuned, advert: time.Second}
	if tuned {
		k.advert = 100 * time.Millisecond
	}
	dir := t.TempDir()
	for i, h := range b.lab.Nodes() {
		n := &knode{name: b.names[i], host: h, dir: filepath.Join(dir, b.names[i]), prio: 150 - 50*i}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		n.conf = filepath.Join(n.dir, "keepalived.conf")
		global, advert := "", "1"
		if tuned {
			global, advert = "    vrrp_version 3\n", "0.1"
		}
		conf := fmt.Sprintf(`global_defs {
    router_id %s
%s}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int %s
    nopreempt
    virtual_ipaddress {
        %s/24 dev eth0
    }
}
`, n.name, global, n.prio, advert, b.lab.VIP())
		if err := os.WriteFile(n.conf, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		k.nodes = append(k.nodes, n)
	}
	for _, n := range k.nodes {
		k.startWeb(n)
		k.startKA(t, n)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range k.nodes {
				t.Logf("%s keepalived output:\n%s", n.name, tail(n.ka.Output(), 3000))
			}
		}
		if k.stale > 0 {
			t.Logf("keepalived left the VIP on a restarted node's eth0 %d times (removed by the bench)", k.stale)
		}
	})
	return k
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

func (k *keepalived) startWeb(n *knode) {
	n.web = k.b.lab.Start(n.host, nil, k.bin, "demo-backend", "--listen", "0.0.0.0:8080", "--name", n.name)
}

// startKA starts keepalived in the foreground (VRRP only, logging to the
// console, its own pid files) and waits until it has entered a state.
func (k *keepalived) startKA(t *testing.T, n *knode) {
	t.Helper()
	n.ka = k.b.lab.Start(n.host, nil, "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"--use-file", n.conf, "--pid", filepath.Join(n.dir, "keepalived.pid"), "--vrrp_pid", filepath.Join(n.dir, "vrrp.pid"),
		"--checkers_pid", filepath.Join(n.dir, "checkers.pid"))
	k.waitLog(t, n, "Entering BACKUP STATE", 0)
}

// waitLog waits until n's keepalived has logged what more than before
// times.
func (k *keepalived) waitLog(t *testing.T, n *knode, what string, before int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if strings.Count(n.ka.Output(), what) > before {
			return
		}
		if n.ka.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s: keepalived did not log %q:\n%s", n.name, what, tail(n.ka.Output(), 3000))
		}
	}
}

// children returns the PIDs of pid's child processes.
func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// crash SIGKILLs n's keepalived, VRRP child included, as a crash would:
// the parent is stopped first, so that it neither respawns the child nor
// makes it shut down cleanly (the child leaves when its parent dies).
func (k *keepalived) crash(t *testing.T, n *knode) {
	pid := n.ka.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	kids := children(pid)
	if len(kids) == 0 {
		t.Fatalf("%s: keepalived %d has no VRRP child", n.name, pid)
	}
	for _, c := range kids {
		syscall.Kill(c, syscall.SIGKILL)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func (k *keepalived) pull(t *testing.T, i int, sc scenario) {
	n := k.nodes[i]
	switch sc {
	case killAll:
		k.b.smp.exclude(i)
		n.web.Kill()
		k.crash(t, n)
	case killDaemon:
		k.b.smp.exclude(i)
		k.crash(t, n)
	case cablePull:
		if err := k.b.lab.Cable(n.host, false); err != nil {
			t.Fatal(err)
		}
	}
}

func (k *keepalived) restore(t *testing.T, i int, sc scenario) {
	n := k.nodes[i]
	switch sc {
	case killAll, killDaemon:
		if err := n.ka.WaitTimeout(5 * time.Second); err == nil {
			t.Fatalf("%s: keepalived exited cleanly after SIGKILL?", n.name)
		}
		if sc == killAll {
			n.web.WaitTimeout(5 * time.Second)
			k.startWeb(n)
		}
		held, err := k.b.smp.holdsNow(i)
		if err != nil {
			t.Fatal(err)
		}
		k.b.smp.excludeUntilDrop(i)
		// A crash leaves the pid files behind, and keepalived refuses to
		// start while one names a process that has not been reaped yet.
		for _, f := range []string{"keepalived.pid", "vrrp.pid", "checkers.pid"} {
			os.Remove(filepath.Join(n.dir, f))
		}
		start := time.Now()
		k.startKA(t, n)
		if held {
			// Give it a few adverts' time to remove the stale address.
			deadline := time.Now().Add(3*k.advert + time.Second)
			for time.Now().Before(deadline) {
				if _, ok := k.b.smp.dropped(i); ok {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if at, ok := k.b.smp.dropped(i); ok {
				t.Logf("  %s restarted: stale VIP gone from its eth0 %v after the restart", n.name, ms(at.Sub(start)))
			} else {
				k.stale++
				t.Logf("  %s restarted: keepalived kept the stale VIP on its eth0; the bench removes it", n.name)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				out, err := k.b.lab.Exec(ctx, n.host, "ip", "addr", "del", k.b.lab.VIP().String()+"/24", "dev", "eth0")
				cancel()
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
			}
		}
	case cablePull:
		if h, err := k.b.smp.holdsNow(i); err != nil || h {
			t.Errorf("the cut-off %s still holds the VIP (%v)", n.name, err)
		}
		before := strings.Count(n.ka.Output(), "Entering BACKUP STATE")
		if err := k.b.lab.Cable(n.host, true); err != nil {
			t.Fatal(err)
		}
		k.waitLog(t, n, "Entering BACKUP STATE", before)
	}
	// Let it hear a few adverts from the master.
	time.Sleep(3 * k.advert)
}
