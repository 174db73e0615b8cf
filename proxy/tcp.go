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
// closing each write side when its read side reaches EOF. The tunnel ends
// when no byte moved either way for idle, or when a write made no
// progress for idle.
func pipe(cn *conn, sc *serverConn, idle time.Duration, bufs *bufPool, fc, sc2 *Counters) {
	var ended atomic.Bool
	up := &halfPipe{src: cn.c, srcRC: cn.rc, dst: sc.TCPConn, dstRC: sc.rc, idle: idle, bufs: bufs, ended: &ended}
	down := &halfPipe{src: sc.TCPConn, srcRC: sc.rc, dst: cn.c, dstRC: cn.rc, idle: idle, bufs: bufs, ended: &ended}
	up.peer, down.peer = down, up
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
//
// The copy reads no clock: src's read deadline is armed in steps of
// idle/8, and each time it passes run looks at whether either direction
// moved bytes since (extend), so the tunnel closes between idle and
// idle×9/8 after its last byte. A write that would block arms dst's write
// deadline for idle and clears it once the bytes are out.
type halfPipe struct {
	src, dst     *net.TCPConn
	srcRC, dstRC syscall.RawConn
	idle         time.Duration
	bufs         *bufPool
	peer         *halfPipe    // the other direction
	ended        *atomic.Bool // shared by both directions: one of them failed
	moved        atomic.Int64 // bytes copied (read by the peer's extend)

	seen     int64     // both directions' bytes at extend's last look
	activeAt time.Time // when extend last saw them move

	watched bool         // the parker watches src for a hang-up
	tok     uint64       // its token there
	hup     atomic.Int32 // hupNone, hupPending (seen, not yet handled), hupHandled

	err error // why the copy ended: nil (EOF), a read or a write error

	// The RawConn callbacks, made once (a method value allocates), and
	// what write hands to writeOut.
	copyFn, writeFn func(fd uintptr) bool
	out             []byte
	werr            error
	armed           bool // write set dst's write deadline
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
	h.copyFn, h.writeFn = h.copy, h.writeOut
	h.activeAt = time.Now()
	h.src.SetReadDeadline(h.activeAt.Add(h.idle / 8))
	for {
		err := h.srcRC.Read(h.copyFn)
		if err == nil {
			err = h.err
		}
		if err == nil || errors.Is(err, io.EOF) {
			return h.moved.Load()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && !h.ended.Load() {
			if h.hup.CompareAndSwap(hupPending, hupHandled) {
				// Woken by hangup: read what is left.
				h.src.SetReadDeadline(time.Now().Add(h.idle / 8))
				continue
			}
			if h.extend() {
				continue
			}
		}
		h.abort()
		return h.moved.Load()
	}
}

// extend re-arms src's read deadline, which passed, unless the tunnel has
// been idle for h.idle.
func (h *halfPipe) extend() bool {
	now := time.Now()
	if m := h.moved.Load() + h.peer.moved.Load(); m != h.seen {
		h.seen, h.activeAt = m, now
	}
	left := h.idle - now.Sub(h.activeAt)
	if left <= 0 {
		return false
	}
	h.src.SetReadDeadline(now.Add(min(left, h.idle/8)))
	return true
}

// copy is the RawConn.Read callback: it reads and forwards until a read
// would block (false: wait for readiness), or until EOF or an error
// (true, the reason in h.err).
func (h *halfPipe) copy(fd uintptr) bool {
	short := false
	for {
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
			if werr := h.write((*b)[:n]); werr != nil {
				h.bufs.put(b)
				h.err = werr
				return true
			}
		}
		short = n < len(*b)
		h.bufs.put(b)
		if err != nil {
			h.err = err
			return true
		}
	}
}

// write writes b to dst. Only a write that has to wait for room reads
// the clock: it gives dst idle to take more bytes.
func (h *halfPipe) write(b []byte) error {
	h.out, h.werr, h.armed = b, nil, false
	err := h.dstRC.Write(h.writeFn)
	if h.armed {
		h.dst.SetWriteDeadline(time.Time{})
	}
	h.out = nil
	if err == nil {
		err = h.werr
	}
	return err
}

// writeOut is the RawConn.Write callback of write.
func (h *halfPipe) writeOut(fd uintptr) bool {
	for len(h.out) > 0 {
		n, err := unix.Write(int(fd), h.out)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			h.dst.SetWriteDeadline(time.Now().Add(h.idle))
			h.armed = true
			return false
		case err != nil:
			h.werr = err
			return true
		case n == 0:
			h.werr = io.ErrShortWrite
			return true
		}
		h.out = h.out[n:]
		h.moved.Add(int64(n))
	}
	return true
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
