package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsID identifies a network namespace by its nsfs inode.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{st.Dev, st.Ino}, nil
}

// inNS runs fn on a fresh goroutine locked to its OS thread, with that
// thread moved into the named namespace; afterwards the thread is moved back
// and unlocked. If moving back fails, the goroutine exits still locked, so
// the runtime ends the thread instead of reusing it in the wrong namespace.
// While locked, the runtime creates new threads from a clean template
// thread, never from this one.
//
// fn must do its namespace-sensitive work (socket(2), opening /proc/sys/net)
// itself: goroutines it starts run on other threads, in the caller's
// namespace.
func inNS(ns string, fn func() error) error {
	target, err := unix.Open(filepath.Join(netnsDir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: namespace %s: %w", ns, err)
	}
	defer unix.Close(target)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: own namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // setns failed: the thread did not move
			errc <- fmt.Errorf("netlab: setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netlab: setns back from %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// checkSocketNS is a net.Dialer/ListenConfig Control function asserting
// that the socket was created in the namespace want (SIOCGSKNS).
func checkSocketNS(want nsID, ns string) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var cerr error
		err := c.Control(func(fd uintptr) {
			nsfd, err := unix.IoctlRetInt(int(fd), unix.SIOCGSKNS)
			if err != nil {
				cerr = fmt.Errorf("SIOCGSKNS: %w", err)
				return
			}
			defer unix.Close(nsfd)
			var st unix.Stat_t
			if err := unix.Fstat(nsfd, &st); err != nil {
				cerr = err
				return
			}
			if (nsID{st.Dev, st.Ino}) != want {
				cerr = fmt.Errorf("netlab: socket is not in namespace %s", ns)
			}
		})
		return errors.Join(err, cerr)
	}
}

// allowed reports whether traffic to a may be sent from a lab namespace:
// the lab's own subnet or loopback.
func (l *Lab) allowed(a netip.Addr) bool {
	a = a.Unmap()
	return l.subnet.Contains(a) || (a.Is4() && a.IsLoopback())
}

// Dial connects from inside h's namespace ("tcp", "tcp4", "udp", "udp4").
// address must be an IP literal with port, in the lab's subnet or on
// loopback (h's own); nothing else is dialled. The socket is created by a
// thread inside the namespace and verified to be there; the caller's
// goroutine and threads never change namespace.
func (l *Lab) Dial(ctx context.Context, h *Host, network, address string) (net.Conn, error) {
	return l.DialFrom(ctx, h, 0, network, address)
}

// DialFrom is Dial from local port port of h's address (0: any).
func (l *Lab) DialFrom(ctx context.Context, h *Host, port uint16, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "udp", "udp4":
	default:
		return nil, fmt.Errorf("netlab: Dial: unsupported network %q", network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("netlab: Dial %s: need an IP literal and port: %w", address, err)
	}
	if !l.allowed(ap.Addr()) {
		return nil, fmt.Errorf("netlab: Dial %s: not a lab (%v) or loopback address", address, l.subnet)
	}
	id, err := statNS(filepath.Join(netnsDir, h.ns))
	if err != nil {
		return nil, fmt.Errorf("netlab: namespace %s: %w", h.ns, err)
	}
	var conn net.Conn
	err = inNS(h.ns, func() error {
		// One IPv4 literal: no resolver, no parallel (Happy Eyeballs)
		// dials, so socket(2) runs on this goroutine.
		d := net.Dialer{FallbackDelay: -1, Control: checkSocketNS(id, h.ns)}
		switch {
		case port == 0:
		case strings.HasPrefix(network, "udp"):
			d.LocalAddr = &net.UDPAddr{IP: h.addr.AsSlice(), Port: int(port)}
		default:
			d.LocalAddr = &net.TCPAddr{IP: h.addr.AsSlice(), Port: int(port)}
		}
		var err error
		conn, err = d.DialContext(ctx, network, ap.String())
		return err
	})
	return conn, err
}

// track registers c to be closed by Lab.Close; after Close it closes c at
// once and returns an error.
func (l *Lab) track(c io.Closer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return errors.New("netlab: the lab is closed")
	}
	l.socks = append(l.socks, c)
	return nil
}

// Listen opens a stream listener inside h's namespace ("tcp" or "tcp4";
// prefer an explicit address such as h.HostPort(8080), or "tcp4").
// Lab.Close closes it, if still open.
func (l *Lab) Listen(h *Host, network, address string) (net.Listener, error) {
	id, err := statNS(filepath.Join(netnsDir, h.ns))
	if err != nil {
		return nil, fmt.Errorf("netlab: namespace %s: %w", h.ns, err)
	}
	var ln net.Listener
	err = inNS(h.ns, func() error {
		lc := net.ListenConfig{Control: checkSocketNS(id, h.ns)}
		var err error
		ln, err = lc.Listen(context.Background(), network, address)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := l.track(ln); err != nil {
		return nil, err
	}
	return ln, nil
}

// ListenPacket opens a packet socket ("udp", "udp4") inside h's namespace.
// Lab.Close closes it, if still open.
func (l *Lab) ListenPacket(h *Host, network, address string) (net.PacketConn, error) {
	id, err := statNS(filepath.Join(netnsDir, h.ns))
	if err != nil {
		return nil, fmt.Errorf("netlab: namespace %s: %w", h.ns, err)
	}
	var pc net.PacketConn
	err = inNS(h.ns, func() error {
		lc := net.ListenConfig{Control: checkSocketNS(id, h.ns)}
		var err error
		pc, err = lc.ListenPacket(context.Background(), network, address)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := l.track(pc); err != nil {
		return nil, err
	}
	return pc, nil
}

// HTTPClient returns an HTTP client whose connections are dialled from
// inside h's namespace (see Dial: URLs must use lab or loopback IP
// literals). No proxy is used, whatever the environment says. Timeout is
// 5 s; keep-alive is on (set DisableKeepAlives on the transport for a new
// connection per request). Idle connections are closed at cleanup.
func (l *Lab) HTTPClient(h *Host) *http.Client {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.Dial(ctx, h, network, addr)
		},
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
	}
	l.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// nsPids returns the processes (not this one) whose network namespace is
// one of ids, by comparing /proc/PID/ns/net with the namespaces' inodes as
// `ip netns pids` does.
func nsPids(ids map[nsID]string) map[int]string {
	pids := map[int]string{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return pids
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := statNS("/proc/" + e.Name() + "/ns/net")
		if err != nil {
			continue // gone, or a zombie
		}
		if ns, ok := ids[id]; ok {
			pids[pid] = ns
		}
	}
	return pids
}

// killIn sends SIGTERM to every process in the namespaces, waits up to
// grace for them to go, then sends SIGKILL and waits up to max in all.
func killIn(nss []string, grace, max time.Duration) error {
	ids := map[nsID]string{}
	for _, ns := range nss {
		if id, err := statNS(filepath.Join(netnsDir, ns)); err == nil {
			ids[id] = ns
		}
	}
	if len(ids) == 0 {
		return nil
	}
	start := time.Now()
	termed := map[int]bool{}
	for {
		pids := nsPids(ids)
		if len(pids) == 0 {
			return nil
		}
		if time.Since(start) > max {
			var left []string
			for _, pid := range slices.Sorted(maps.Keys(pids)) {
				left = append(left, fmt.Sprintf("%d (%s)", pid, pids[pid]))
			}
			return fmt.Errorf("netlab: processes still in the lab after %v: %v", max, left)
		}
		kill := time.Since(start) > grace
		for pid := range pids {
			switch {
			case kill:
				syscall.Kill(pid, syscall.SIGKILL)
			case !termed[pid]: // once: a second SIGTERM may cut a graceful stop short
				termed[pid] = true
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}
