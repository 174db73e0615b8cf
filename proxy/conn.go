package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Client connection states, for closing idle keep-alive connections at
// shutdown without cutting a request short.
const (
	connActive int32 = iota
	connIdle         // a keep-alive connection between requests
	connNew          // a new connection waiting for its first request
	connClosing
	connParked // idle, held by the parker without a goroutine (park.go)
)

// conn is one accepted client connection.
type conn struct {
	eng   *Engine
	c     *net.TCPConn
	rc    syscall.RawConn
	l     *listener
	sem   semaphore // the frontend semaphore this connection holds a slot of
	gsem  semaphore // and the process-wide one
	src   netip.AddrPort
	state atomic.Int32
	fe0   *frontend // the frontend whose session this is
	// served: the connection has had its first request (atomic: closers
	// read it).
	served atomic.Bool

	// While parked (park.go): its epoll token, and when its wait ends.
	parkTok     uint64
	parkedUntil time.Time

	// awaitRequest's callback (bound once, so that waiting allocates
	// nothing), the exchange it reads for, and its outcome.
	readFn  func(fd uintptr) bool
	readFor *exchange
	readErr error
}

func (e *Engine) startConn(l *listener, fe *frontend, global semaphore, c *net.TCPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		release(fe.sem)
		release(global)
		return
	}
	cn := &conn{eng: e, c: c, rc: rc, l: l, sem: fe.sem, gsem: global}
	cn.readFn = cn.readAvailable
	if ap, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		cn.src = ap.AddrPort()
	}
	e.connMu.Lock()
	if e.stopping.Load() {
		e.connMu.Unlock()
		cn.finish()
		return
	}
	e.conns[cn] = struct{}{}
	e.connWG.Add(1)
	e.connMu.Unlock()
	e.run(task{cn: cn, fe: fe})
}

func (cn *conn) serve(fe *frontend) {
	cn.fe0 = fe
	fe.counters.sessionStart()
	if fe.mode == "tcp" {
		cn.serveTCP(fe)
		cn.end()
		return
	}
	cn.resume()
}

// resume serves HTTP requests on the connection until it closes or parks.
func (cn *conn) resume() {
	if !cn.serveHTTP() {
		cn.end()
	}
}

// end closes the session: whoever ends a connection calls it once (its
// goroutine, or for a parked one the parker or the closer).
func (cn *conn) end() {
	cn.fe0.counters.sessionEnd()
	cn.finish()
	cn.eng.connWG.Done()
}

func (cn *conn) finish() {
	cn.c.Close()
	release(cn.sem)
	release(cn.gsem)
	cn.eng.connMu.Lock()
	delete(cn.eng.conns, cn)
	cn.eng.connMu.Unlock()
}

// awaitRequest parks until the client sends bytes (or EOF, or an error,
// or the read deadline) and reads them into a buffer borrowed only once
// there are bytes: an idle connection holds no buffer, and waiting costs
// no system call of its own (the read that finds the bytes takes them).
func (cn *conn) awaitRequest(x *exchange) error {
	cn.readFor, cn.readErr = x, nil
	err := cn.rc.Read(cn.readFn)
	cn.readFor = nil
	if err != nil {
		return err
	}
	return cn.readErr
}

// readAvailable is awaitRequest's RawConn callback: it reports false (wait
// for readiness) while the socket has nothing to read.
func (cn *conn) readAvailable(fd uintptr) bool {
	x := cn.readFor
	b := x.fe.bufs.get()
	n, err := readFD(fd, *b)
	switch {
	case err == unix.EAGAIN:
		x.fe.bufs.put(b)
		return false
	case err != nil:
		x.fe.bufs.put(b)
		cn.readErr = err
		return true
	}
	x.in, x.r, x.w = b, 0, n
	x.fe.counters.BytesIn.Add(int64(n))
	return true
}

// readFD reads once from a non-blocking fd: unix.EAGAIN while there is
// nothing, io.EOF at the end, (n > 0, nil) otherwise.
func readFD(fd uintptr, b []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), b)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// peekFD checks without blocking whether fd has a byte to read. It reports
// false while the socket would block.
func peekFD(fd uintptr, b *[1]byte) (bool, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case errno == unix.EAGAIN || errno == unix.EINTR:
		return false, nil
	case errno != 0:
		return true, errno
	case n == 0:
		return true, io.EOF
	}
	return true, nil
}

// Buffers are borrowed per request and returned before a connection goes
// idle.
type bufPool struct{ p sync.Pool }

func newBufPool(size int) *bufPool {
	return &bufPool{p: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

func (bp *bufPool) get() *[]byte  { return bp.p.Get().(*[]byte) }
func (bp *bufPool) put(b *[]byte) { bp.p.Put(b) }

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
