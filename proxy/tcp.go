package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serveTCP proxies a TCP-mode connection: pick a server, connect (with
// retries and redispatch), then copy both ways with half-close.
func (cn *conn) serveTCP(fe *frontend) {
	x := &exchange{cn: cn, fe: fe, be: fe.backend}
	x.be.counters.sessionStart()
	defer x.be.counters.sessionEnd()
	var br = x.balanceRequest()
	at := attempts{skip: -1, same: -1}
	if status := x.connect(br, &at); status != 0 {
		return // HAProxy closes a TCP client it cannot serve
	}
	idle := fe.t.Tunnel.D()
	if idle == 0 {
		idle = max(fe.t.Client.D(), x.be.t.Server.D())
	}
	pipe(cn, x.sc, idle, fe.bufs, fe.counters, x.srv.counters)
	x.dropServer()
}

// pipe copies client→server and server→client until both directions end,
// closing each write side when its read side reaches EOF. A direction idle
// for longer than idle ends the tunnel.
func pipe(cn *conn, sc *serverConn, idle time.Duration, bufs *bufPool, fc, sc2 *Counters) {
	var ended atomic.Bool
	up := &halfPipe{src: cn.c, srcRC: cn.rc, dst: sc.TCPConn, idle: idle, bufs: bufs, ended: &ended}
	down := &halfPipe{src: sc.TCPConn, srcRC: sc.rc, dst: cn.c, idle: idle, bufs: bufs, ended: &ended}
	if p := cn.eng.parker; p != nil {
		p.watch(up)
		p.watch(down)
		defer p.unwatch(up)
		defer p.unwatch(down)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := up.run()
		fc.BytesIn.Add(n)
		sc2.BytesIn.Add(n)
	}()
	n := down.run()
	fc.BytesOut.Add(n)
	sc2.BytesOut.Add(n)
	wg.Wait()
}

// A halfPipe copies one direction of a tunnel.
//
// After a read shorter than the buffer it waits for readiness straight
// away instead of reading again: the runtime's poller is edge-triggered,
// and the whole copy runs inside one RawConn.Read, whose loop keeps a
// readiness edge that came while the bytes were written (a fresh
// RawConn.Read would clear it, hence the extra read that always fails
// with EAGAIN otherwise: one system call in three per message). One case
// leaves no new edge: a FIN that came with the last bytes. The poller
// does not pass on EPOLLRDHUP, so the engine's parker watches each
// tunnelled socket for it in its own epoll set (watch) and wakes the
// waiting copy (hangup). Without the parker a halfPipe always reads again.
type halfPipe struct {
	src, dst *net.TCPConn
	srcRC    syscall.RawConn
	idle     time.Duration
	bufs     *bufPool
	readAt   time.Time // when the read deadline was last pushed
	writeAt  time.Time // and the write deadline

	ended   *atomic.Bool // shared by both directions: one of them failed
	watched bool         // the parker watches src for a hang-up
	tok     uint64       // its token there
	hup     atomic.Int32 // hupNone, hupPending (seen, not yet handled), hupHandled

	total int64 // bytes copied
	err   error // why the copy ended: nil (EOF), a read or a write error
}

const (
	hupNone = iota
	hupPending
	hupHandled
)

var errTunnelEnded = errors.New("the tunnel's other direction failed")

// run copies until EOF or an error and returns the bytes copied. It holds
// a buffer only while bytes are moving: between bursts it waits for
// readiness with none, and the read that finds bytes borrows the buffer it
// reads them into.
func (h *halfPipe) run() int64 {
	defer h.dst.CloseWrite() // tell the other side we are done
	for {
		// (Re-)armed before the wait that may follow, which checks it first.
		h.readAt = time.Now()
		h.src.SetReadDeadline(h.readAt.Add(h.idle))
		err := h.srcRC.Read(h.copy)
		if err == nil {
			err = h.err
		}
		switch {
		case err == nil || errors.Is(err, io.EOF):
			return h.total
		case errors.Is(err, os.ErrDeadlineExceeded) && h.hup.CompareAndSwap(hupPending, hupHandled) && !h.ended.Load():
			// Woken by hangup, not by the idle timeout: read what is left.
			continue
		}
		h.abort()
		return h.total
	}
}

// copy is the RawConn.Read callback: it reads and forwards until a read
// would block (false: wait for readiness), or until EOF or an error
// (true, the reason in h.err).
func (h *halfPipe) copy(fd uintptr) bool {
	short := false
	for {
		// Deadlines measure inactivity; re-arm them at most every idle/8.
		now := time.Now()
		if now.Sub(h.readAt) > h.idle/8 {
			h.src.SetReadDeadline(now.Add(h.idle))
			h.readAt = now
		}
		// Checked after the re-arm, which may have overwritten the
		// deadline that abort or hangup set after storing their flag.
		if h.ended.Load() {
			h.err = errTunnelEnded
			return true
		}
		if short && h.watched && h.hup.Load() == hupNone {
			return false
		}
		b := h.bufs.get()
		n, err := readFD(fd, *b)
		if err == unix.EAGAIN {
			h.bufs.put(b)
			return false
		}
		if n > 0 {
			if now.Sub(h.writeAt) > h.idle/8 {
				h.dst.SetWriteDeadline(now.Add(h.idle))
				h.writeAt = now
			}
			if _, werr := h.dst.Write((*b)[:n]); werr != nil {
				h.bufs.put(b)
				h.err = werr
				return true
			}
			h.total += int64(n)
		}
		short = n < len(*b)
		h.bufs.put(b)
		if err != nil {
			h.err = err
			return true
		}
	}
}

// hangup is the parker's report that src was shut down or failed: a copy
// waiting for readiness is woken (through its read deadline) to read the
// rest and the EOF.
func (h *halfPipe) hangup() {
	if h.hup.CompareAndSwap(hupNone, hupPending) {
		h.src.SetReadDeadline(time.Unix(1, 0))
	}
}

// abort ends both directions after a failure or an idle timeout.
func (h *halfPipe) abort() {
	h.ended.Store(true)
	h.src.SetDeadline(time.Unix(1, 0))
	h.dst.SetDeadline(time.Unix(1, 0))
}
