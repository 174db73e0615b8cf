package boxes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// box is one machine: a systemd-nspawn container booted from an overlay of
// the cached rootfs, inside a lab node's network namespace. Its writable
// layer (upper) lives in the test's temp directory, so a box killed and
// booted again keeps its packages, configs and Raft data.
type box struct {
	t       *testing.T
	name    string // host name, and so the Fulcrum node name: box1..
	host    *netlab.Host
	lower   string
	upper   string
	work    string
	root    string // the overlay's mount point: the box's /
	machine string // nspawn's machine name, unique per run
	logPath string

	mounted bool
	cmd     *exec.Cmd // nspawn, while booted
	done    chan struct{}
	log     *os.File
	leader  int // the container's PID 1, as seen from the host
	boots   int
}

// boxPath is the PATH given to commands run inside a box.
const boxPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// newBox prepares (does not boot) box i in lab node i; dir is the test's
// temp directory. Its removal (stop, unmount) is registered with
// t.Cleanup, and runs before the lab's.
func newBox(t *testing.T, lab *netlab.Lab, i int, lower, dir string) *box {
	t.Helper()
	base := filepath.Join(dir, fmt.Sprintf("box%d", i))
	b := &box{
		t:       t,
		name:    fmt.Sprintf("box%d", i),
		host:    lab.Node(i),
		lower:   lower,
		upper:   filepath.Join(base, "upper"),
		work:    filepath.Join(base, "work"),
		root:    filepath.Join(base, "root"),
		machine: fmt.Sprintf("%s-box%d", lab.Name(), i),
		logPath: filepath.Join(base, "nspawn.log"),
	}
	for _, d := range []string{b.upper, b.work, b.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeOwner(base); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.remove(); err != nil {
			t.Errorf("%s: cleanup: %v", b.name, err)
		}
		if t.Failed() {
			if out, err := os.ReadFile(b.logPath); err == nil {
				t.Logf("%s: nspawn console (last 6 KiB):\n%s", b.name, tail(string(out), 6<<10))
			}
		}
	})
	return b
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// mount mounts the overlay at b.root.
func (b *box) mount() error {
	if b.mounted {
		return nil
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", b.lower, b.upper, b.work)
	if err := unix.Mount("overlay", b.root, "overlay", 0, opts); err != nil {
		return fmt.Errorf("%s: mount overlay on %s: %w", b.name, b.root, err)
	}
	b.mounted = true
	return nil
}

// unmount unmounts the overlay (bounded retries while the kernel lets go
// of a just-killed container's references).
func (b *box) unmount() error {
	if !b.mounted {
		return nil
	}
	var err error
	for range 50 {
		if err = unix.Unmount(b.root, 0); err == nil || errors.Is(err, unix.EINVAL) {
			b.mounted = false
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Still busy: detach it, so that nothing is left mounted on the host.
	if derr := unix.Unmount(b.root, unix.MNT_DETACH); derr == nil {
		b.mounted = false
		return fmt.Errorf("%s: umount %s: %v (detached lazily instead)", b.name, b.root, err)
	}
	return fmt.Errorf("%s: umount %s: %w", b.name, b.root, err)
}

// boot mounts the overlay and starts systemd-nspawn in the background; it
// returns once the container's PID 1 is known and systemd answers.
func (b *box) boot() {
	b.t.Helper()
	if b.cmd != nil {
		b.t.Fatalf("%s: already booted", b.name)
	}
	if err := b.mount(); err != nil {
		b.t.Fatal(err)
	}
	// The box's own name: systemd sets the host name from /etc/hostname
	// (the tree has the build host's), overriding nspawn's --hostname.
	hn := filepath.Join(b.root, "etc/hostname")
	if cur, _ := os.ReadFile(hn); string(cur) != b.name+"\n" {
		if err := os.WriteFile(hn, []byte(b.name+"\n"), 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	log, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	b.boots++
	fmt.Fprintf(log, "\n==== boot %d at %s ====\n", b.boots, time.Now().Format(time.RFC3339Nano))
	args := []string{
		"-b", "--register=no", "--keep-unit",
		"--network-namespace-path=/var/run/netns/" + b.host.NS(),
		"--hostname=" + b.name,
		"--machine=" + b.machine,
		"--capability=CAP_NET_ADMIN,CAP_NET_RAW",
		"--console=read-only",
		"-D", b.root,
	}
	cmd := exec.Command("systemd-nspawn", args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group; and if the test binary dies without its
	// cleanups, the kernel kills nspawn (the container follows, below).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_LOCK=0")
	if err := cmd.Start(); err != nil {
		log.Close()
		b.t.Fatalf("%s: systemd-nspawn: %v", b.name, err)
	}
	b.cmd, b.log, b.done, b.leader = cmd, log, make(chan struct{}), 0
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(b.done)

	// The container's PID 1: nspawn's child whose PID in its own PID
	// namespace is 1.
	deadline := time.Now().Add(30 * time.Second)
	for b.leader == 0 {
		if b.exited() || time.Now().After(deadline) {
			b.t.Fatalf("%s: no container init under nspawn %d (exited: %v); console:\n%s", b.name, cmd.Process.Pid, b.exited(), b.console())
		}
		b.leader = containerInit(cmd.Process.Pid)
		if b.leader == 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	// systemd answers on its private socket: it is far enough to take
	// dpkg and systemctl; the rest of the boot goes on meanwhile.
	var last string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := b.run(10*time.Second, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		switch last {
		case "initializing", "starting", "running", "degraded":
			return
		}
		if b.exited() || time.Now().After(deadline) {
			b.t.Fatalf("%s: systemd does not answer (last: %q, nspawn exited: %v); console:\n%s", b.name, last, b.exited(), b.console())
		}
	}
}

func (b *box) console() string {
	out, _ := os.ReadFile(b.logPath)
	return tail(string(out), 4<<10)
}

func (b *box) exited() bool {
	if b.done == nil {
		return true
	}
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// containerInit finds the child of nspawn that is PID 1 of its own PID
// namespace (the last NSpid entry is 1), or 0.
func containerInit(nspawn int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		var ppid int
		nsInit := false
		for line := range strings.Lines(string(st)) {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "PPid:":
				ppid, _ = strconv.Atoi(f[1])
			case "NSpid:":
				nsInit = len(f) >= 3 && f[len(f)-1] == "1"
			}
		}
		if ppid == nspawn && nsInit {
			return pid
		}
	}
	return 0
}

// run runs argv inside the booted box (every namespace of its PID 1, a
// clean environment) and returns the combined output.
func (b *box) run(timeout time.Duration, argv ...string) (string, error) {
	if b.leader == 0 || b.exited() {
		return "", fmt.Errorf("%s is not running", b.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"-t", strconv.Itoa(b.leader), "-a", "/usr/bin/env", "-i", boxPath,
		"HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w", b.name, strings.Join(argv, " "), err)
	}
	return string(out), nil
}

// must is run that fails the test on an error.
func (b *box) must(timeout time.Duration, argv ...string) string {
	b.t.Helper()
	out, err := b.run(timeout, argv...)
	if err != nil {
		b.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// put writes a file into the box (through the overlay, as the box sees
// it). Not under /tmp: systemd mounts a tmpfs there inside the box.
func (b *box) put(path string, data []byte, mode os.FileMode) {
	b.t.Helper()
	if !b.mounted {
		b.t.Fatalf("%s: put %s: not mounted", b.name, path)
	}
	p := filepath.Join(b.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		b.t.Fatal(err)
	}
}

// waitUnit waits until unit is active; it fails at once when the unit
// has failed.
func (b *box) waitUnit(unit string, timeout time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	var last string
	for deadline := start.Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		out, _ := b.run(10*time.Second, "systemctl", "is-active", unit)
		last = strings.TrimSpace(out)
		if last == "active" {
			return time.Since(start)
		}
		if last == "failed" || time.Now().After(deadline) {
			st, _ := b.run(10*time.Second, "systemctl", "status", "--no-pager", "-l", unit)
			j, _ := b.run(10*time.Second, "journalctl", "--no-pager", "-n", "60", "-u", unit)
			b.t.Fatalf("%s: %s is %q after %v\n%s\n%s", b.name, unit, last, time.Since(start).Round(time.Millisecond), st, j)
		}
	}
}

// kill ends the box outright: SIGKILL to its PID 1 (the kernel then kills
// every process of the container) and to nspawn, as pulling the power
// would. The overlay stays mounted.
func (b *box) kill() error {
	if b.cmd == nil {
		return nil
	}
	if b.leader > 0 {
		syscall.Kill(b.leader, syscall.SIGKILL)
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	var err error
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		err = fmt.Errorf("%s: nspawn %d did not exit after SIGKILL", b.name, b.cmd.Process.Pid)
	}
	// The container's processes are gone once its init is reaped.
	if b.leader > 0 {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, serr := os.Stat(fmt.Sprintf("/proc/%d", b.leader)); serr != nil {
				break
			}
			if time.Now().After(deadline) {
				err = errors.Join(err, fmt.Errorf("%s: container init %d still there 10 s after SIGKILL", b.name, b.leader))
				break
			}
		}
	}
	b.log.Close()
	b.cmd, b.leader = nil, 0
	// nspawn leaves its propagation directory behind when killed.
	os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", b.machine))
	return err
}

// remove kills the box if it runs and unmounts its overlay.
func (b *box) remove() error {
	return errors.Join(b.kill(), b.unmount())
}

// ownerName, in each box's directory, names the test process that mounted
// its overlay ("PID STARTTIME"), so that a later run can tell a live
// box from one left by a test binary that died without its cleanups.
const ownerName = "owner"

func procStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", errors.New("short /proc/PID/stat")
	}
	return f[19], nil
}

func writeOwner(dir string) error {
	start, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ownerName), []byte(fmt.Sprintf("%d %s\n", os.Getpid(), start)), 0o644)
}

// sweepStaleBoxes unmounts the overlays of boxes on lower whose owner is
// gone (a `go test -timeout` panic skips every cleanup) and removes their
// directories. Run it after netlab.New, whose own sweep has ended the
// processes of those runs' labs, and with them their containers.
func sweepStaleBoxes(t *testing.T, lower string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(b)) {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != "overlay" || !strings.Contains(","+g[2]+",", ",lowerdir="+lower+",") {
			continue
		}
		mnt := f[4]
		dir := filepath.Dir(mnt)
		if o, err := os.ReadFile(filepath.Join(dir, ownerName)); err == nil {
			var pid int
			var start string
			if _, err := fmt.Sscan(string(o), &pid, &start); err == nil {
				if cur, err := procStart(pid); err == nil && cur == start {
					continue // a live run's box
				}
			}
		}
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		os.RemoveAll(dir)
		// The run's temp directories, when nothing else is left in them.
		os.Remove(filepath.Dir(dir))
		os.Remove(filepath.Dir(filepath.Dir(dir)))
		t.Logf("removed a box left by a dead test run: %s", mnt)
	}
}
