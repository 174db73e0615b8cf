package cluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func listenNotify(t *testing.T, path string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next datagram, failing the test if none comes in time.
func (s *notifySocket) next(t *testing.T) string {
	t.Helper()
	if err := s.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := s.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierSends(t *testing.T) {
	s := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	n := NewNotifier(s.path, discardLogger())
	if err := n.Notify(NotifyReady); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "READY=1" {
		t.Errorf("got %q", got)
	}
	if err := n.Notify(NotifyReady, "STATUS=serving"); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "READY=1\nSTATUS=serving" {
		t.Errorf("got %q", got)
	}

	before, err := MonotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Reloading(); err != nil {
		t.Fatal(err)
	}
	after, _ := MonotonicUsec()
	checkReloading(t, s.next(t), before, after)
}

// checkReloading checks a RELOADING=1 message and that its MONOTONIC_USEC
// lies within [before, after].
func checkReloading(t *testing.T, msg string, before, after uint64) {
	t.Helper()
	lines := strings.Split(msg, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC=", msg)
	}
	usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d outside [%d, %d]", usec, before, after)
	}
}

func TestNotifierAbstractSocket(t *testing.T) {
	name := fmt.Sprintf("@fulcrum-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	s := listenNotify(t, name)
	if err := NewNotifier(name, discardLogger()).Notify(NotifyStopping); err != nil {
		t.Fatal(err)
	}
	if got := s.next(t); got != "STOPPING=1" {
		t.Errorf("got %q", got)
	}
}

func TestNotifierDisabled(t *testing.T) {
	var zero *Notifier
	for _, n := range []*Notifier{zero, NewNotifier("", nil), {}} {
		if n.Enabled() || n.Notify(NotifyReady) != nil || n.Reloading() != nil {
			t.Errorf("%+v: not a no-op", n)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if NotifierFromEnv(nil).Enabled() {
		t.Error("enabled without NOTIFY_SOCKET")
	}
}

func TestNotifierErrorIsNotFatal(t *testing.T) {
	n := NewNotifier(filepath.Join(t.TempDir(), "absent.sock"), discardLogger())
	if err := n.Notify(NotifyReady); err == nil {
		t.Error("no error for a missing socket")
	}
}
