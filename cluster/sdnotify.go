package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// The sd_notify states the agent sends (see sd_notify(3)).
const (
	NotifyReady     = "READY=1"
	NotifyReloading = "RELOADING=1"
	NotifyStopping  = "STOPPING=1"
)

// notifyTimeout bounds one datagram write; systemd reads its socket at once,
// so this only matters when the socket is wedged.
const notifyTimeout = 2 * time.Second

// Notifier tells the service manager about the agent's state with
// sd_notify datagrams. Its zero value, and one built without a socket, do
// nothing, so the agent runs the same with or without systemd.
type Notifier struct {
	socket string
	log    *slog.Logger
}

// NewNotifier returns a notifier that writes to the unixgram socket at
// socket, or does nothing if socket is "". A leading '@' names a socket in
// the abstract namespace, as in NOTIFY_SOCKET (Go's socket address encoding
// turns it into the leading NUL byte).
func NewNotifier(socket string, log *slog.Logger) *Notifier {
	return &Notifier{socket: socket, log: log}
}

// NotifierFromEnv returns a notifier for $NOTIFY_SOCKET.
func NotifierFromEnv(log *slog.Logger) *Notifier {
	return NewNotifier(os.Getenv("NOTIFY_SOCKET"), log)
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Notify sends one datagram holding the given newline-separated assignments
// ("READY=1"). A failure is logged and returned, but the caller need not act
// on it: systemd notifications are advisory for the agent.
func (n *Notifier) Notify(states ...string) error {
	if !n.Enabled() {
		return nil
	}
	var msg []byte
	for i, s := range states {
		if i > 0 {
			msg = append(msg, '\n')
		}
		msg = append(msg, s...)
	}
	err := n.send(msg)
	if err != nil && n.log != nil {
		n.log.Warn("sd_notify failed", "socket", n.socket, "message", string(msg), "err", err)
	}
	return err
}

func (n *Notifier) send(msg []byte) error {
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(notifyTimeout)); err != nil {
		return err
	}
	_, err = conn.Write(msg)
	return err
}

// Reloading sends RELOADING=1 with MONOTONIC_USEC, the CLOCK_MONOTONIC time
// at which the reload began, as systemd's notify-reload protocol wants.
func (n *Notifier) Reloading() error {
	if !n.Enabled() {
		return nil
	}
	usec, err := MonotonicUsec()
	if err != nil {
		return n.Notify(NotifyReloading)
	}
	return n.Notify(NotifyReloading, "MONOTONIC_USEC="+strconv.FormatUint(usec, 10))
}

// MonotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC against.
func MonotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime: %w", err)
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
