package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
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
	var wg sync.WaitGroup
	wg.Add(1)
	up := halfPipe{src: cn.c, srcRC: cn.rc, dst: sc.TCPConn, idle: idle, bufs: bufs}
	down := halfPipe{src: sc.TCPConn, srcRC: sc.rc, dst: cn.c, idle: idle, bufs: bufs}
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

type halfPipe struct {
	src, dst *net.TCPConn
	srcRC    syscall.RawConn
	idle     time.Duration
	bufs     *bufPool
	readAt   time.Time // when the read deadline was last pushed
	writeAt  time.Time // and the write deadline

	// What the RawConn read callback got: a borrowed buffer with n bytes,
	// or the read's error.
	buf  *[]byte
	n    int
	rerr error
}

// run copies until EOF or an error. It holds a buffer only while bytes are
// moving: between bursts it waits for readiness with none, and the read
// that finds bytes borrows the buffer it reads them into.
func (h *halfPipe) run() int64 {
	var total int64
	read := func(fd uintptr) bool {
		b := h.bufs.get()
		n, err := readFD(fd, *b)
		if err == unix.EAGAIN {
			h.bufs.put(b)
			return false
		}
		h.buf, h.n, h.rerr = b, n, err
		return true
	}
	defer func() {
		// Tell the other side we are done, and unblock the other direction
		// when this one failed.
		h.dst.CloseWrite()
	}()
	for {
		// Deadlines measure inactivity; re-arm them at most every idle/8.
		now := time.Now()
		if now.Sub(h.readAt) > h.idle/8 {
			h.src.SetReadDeadline(now.Add(h.idle))
			h.readAt = now
		}
		if err := h.srcRC.Read(read); err != nil {
			h.abort()
			return total
		}
		buf, n, err := h.buf, h.n, h.rerr
		h.buf = nil
		if n > 0 {
			if now := time.Now(); now.Sub(h.writeAt) > h.idle/8 {
				h.dst.SetWriteDeadline(now.Add(h.idle))
				h.writeAt = now
			}
			if _, werr := h.dst.Write((*buf)[:n]); werr != nil {
				h.bufs.put(buf)
				h.abort()
				return total
			}
			total += int64(n)
		}
		h.bufs.put(buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				h.abort()
			}
			return total
		}
	}
}

// abort ends both directions after a failure or an idle timeout.
func (h *halfPipe) abort() {
	h.src.SetDeadline(time.Unix(1, 0))
	h.dst.SetDeadline(time.Unix(1, 0))
}
