package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listener is one bound address. It outlives config swaps while its address
// stays in the config; fe points at the frontend of the running config.
type listener struct {
	addr string
	ln   *net.TCPListener
	fe   atomic.Pointer[frontend]
	eng  *Engine
	done chan struct{}
	wg   sync.WaitGroup // the accept loop
	// deferAccept: TCP_DEFER_ACCEPT is set (HTTP frontends); guarded by
	// Engine.applyMu.
	deferAccept bool
}

// smartAccept sets TCP_DEFER_ACCEPT on an HTTP frontend's listener, as
// HAProxy's default `option tcp-smart-accept` does: the kernel hands over
// a connection once its first bytes have arrived, so that the first read
// finds the request instead of waiting for it. A TCP frontend (where the
// server may speak first) clears it. Failure only costs that saving.
func (l *listener) smartAccept(on bool) {
	if on == l.deferAccept {
		return
	}
	secs := 0
	if on {
		secs = 1 // the kernel's unit: retransmit the SYN-ACK for about a second
	}
	rc, err := l.ln.SyscallConn()
	if err == nil {
		rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
		})
	}
	if err != nil {
		l.eng.log.Warn("TCP_DEFER_ACCEPT", "bind", l.addr, "err", err)
		return
	}
	l.deferAccept = on
}

// listen binds addr with IP_FREEBIND (so a VIP not yet held can be bound)
// and SO_REUSEADDR, as a plain TCP socket.
func listen(addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(network, address string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
					return
				}
				level, opt := unix.SOL_IP, unix.IP_FREEBIND
				if network == "tcp6" {
					level, opt = unix.SOL_IPV6, unix.IPV6_FREEBIND
				}
				serr = unix.SetsockoptInt(int(fd), level, opt, 1)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	// Plain TCP: Go listens with MPTCP where the kernel has it, and an
	// MPTCP socket takes no socket filter (see Engine.Refuse).
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	return l.(*net.TCPListener), nil
}

// serve accepts connections until close. Each accepted connection holds a
// slot of the process-wide and the frontend's maxconn semaphores; when
// either is full the loop stops accepting, as HAProxy does, and the kernel
// backlog holds new clients.
func (l *listener) serve() {
	defer l.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		fe := l.fe.Load()
		global := l.eng.globalSem()
		if !acquire(global, l.done) {
			return
		}
		if !acquire(fe.sem, l.done) {
			release(global)
			return
		}
		c, err := l.ln.AcceptTCP()
		if err != nil {
			release(fe.sem)
			release(global)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: back off rather than spin.
			l.eng.log.Warn("accept failed", "bind", l.addr, "err", err)
			select {
			case <-time.After(backoff):
				backoff = min(2*backoff, time.Second)
			case <-l.done:
				return
			}
			continue
		}
		backoff = 5 * time.Millisecond
		l.eng.startConn(l, fe, global, c)
	}
}

func (l *listener) close() {
	close(l.done)
	l.ln.Close()
	l.wg.Wait()
}

// A semaphore is a buffered channel; nil means unlimited.
type semaphore chan struct{}

func acquire(s semaphore, done <-chan struct{}) bool {
	if s == nil {
		return true
	}
	select {
	case s <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

func release(s semaphore) {
	if s != nil {
		<-s
	}
}
