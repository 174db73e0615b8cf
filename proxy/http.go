package proxy

import (
	"errors"
	"io"
	"time"

	"github.com/fulcrum-lb/fulcrum/proxy/h1"
)

// exchange is the state of one HTTP request/response on a client
// connection. Its buffers are borrowed for the request and returned after.
type exchange struct {
	cn  *conn
	fe  *frontend
	be  *backend
	srv *server
	sc  *serverConn

	in     *[]byte // client-side bytes: in[r:w] not yet consumed
	r, w   int
	sin    *[]byte // server-side bytes
	sr, sw int
	out    *[]byte          // head being written
	lr     io.LimitedReader // spliceBody's source, kept here to allocate nothing

	req  h1.Request
	resp h1.Response

	headStart   int       // where the request head begins in in
	cliAt       time.Time // when the client's deadline was last pushed
	srvAt       time.Time // and the server's
	isHead      bool
	keepClient  bool
	reqBodySent bool
	status      int
}

// serveHTTP runs requests on the connection until it closes or one of them
// asks to close, or until it parks (then it reports true, and the
// connection is the parker's). Every request is served on the frontend of
// the config running when it began.
func (cn *conn) serveHTTP() (parked bool) {
	x := cn.eng.getExchange(cn)
	defer cn.eng.putExchange(x)
	for {
		fe := cn.l.fe.Load()
		x.fe = fe
		if cn.eng.stopping.Load() {
			return false
		}
		if x.r == x.w {
			x.releaseIn()
			wait := fe.t.HTTPKeepAlive
			waiting := connIdle
			if !cn.served.Load() {
				wait, waiting = fe.t.HTTPRequest, connNew
			}
			now := time.Now()
			until := now.Add(wait.D())
			// Wait here for parkAfter at most; then park (no goroutine).
			park := cn.eng.parker != nil && wait.D() > parkAfter
			if park {
				cn.c.SetReadDeadline(now.Add(parkAfter))
			} else {
				cn.c.SetReadDeadline(until)
			}
			// Shutdown sets stopping, then closes waiting connections:
			// either it sees this one waiting, or this one sees it
			// stopping. Drain closes only keep-alive connections between
			// requests: a new connection still gets its first answer.
			cn.state.Store(waiting)
			if cn.eng.stopping.Load() || cn.served.Load() && cn.eng.draining.Load() {
				return false
			}
			err := cn.awaitRequest(x)
			if park && err != nil && isTimeout(err) {
				if cn.eng.parker.park(cn, waiting, until) {
					return true
				}
				if cn.state.Load() == waiting && !cn.eng.stopping.Load() {
					// Not parked (epoll refused it): wait here after all.
					cn.c.SetReadDeadline(until)
					err = cn.awaitRequest(x)
				}
			}
			if !cn.state.CompareAndSwap(waiting, connActive) || err != nil {
				return false
			}
		}
		if !cn.served.Load() {
			cn.served.Store(true)
		}
		if !x.serve() {
			return false
		}
	}
}

func (x *exchange) releaseIn() {
	if x.in != nil {
		x.fe.bufs.put(x.in)
		x.in, x.r, x.w = nil, 0, 0
	}
}

func (x *exchange) releaseServerSide() {
	if x.sin != nil {
		x.fe.bufs.put(x.sin)
		x.sin, x.sr, x.sw = nil, 0, 0
	}
	if x.out != nil {
		x.fe.bufs.put(x.out)
		x.out = nil
	}
}

// serve handles one request; it reports whether the connection stays open.
func (x *exchange) serve() bool {
	defer x.releaseServerSide()
	if x.in == nil {
		x.in = x.fe.bufs.get()
	}
	if !x.readHead() {
		return false
	}
	fe := x.fe
	x.be = fe.backend
	x.isHead = h1.EqualFold(x.req.Method, "HEAD")
	x.keepClient = x.req.KeepAlive
	x.status = 0
	x.be.counters.sessionStart()
	defer x.be.counters.sessionEnd()
	x.cn.eng.inflight.Add(1)
	defer x.cn.eng.inflight.Add(-1)

	ok := x.forward()
	if x.status != 0 {
		fe.counters.status(x.status)
		x.be.counters.status(x.status)
	}
	return ok && x.keepClient && !x.cn.eng.closing()
}

// readHead reads and parses the request head into x.req. On a parse fault
// it answers the matching error and reports false.
func (x *exchange) readHead() bool {
	buf := *x.in
	if x.r > 0 {
		x.w = copy(buf, buf[x.r:x.w])
		x.r = 0
	}
	deadlineSet := false
	for {
		n, err := h1.ParseRequest(buf[x.r:x.w], &x.req, x.fe.limits)
		if err == nil {
			x.headStart = x.r
			_ = n
			return true
		}
		if pe, ok := err.(*h1.Error); ok {
			x.fe.counters.ReqErrors.Add(1)
			x.fe.counters.status(pe.Status)
			x.cn.writeError(pe.Status)
			return false
		}
		if x.w == len(buf) {
			x.fe.counters.ReqErrors.Add(1)
			x.fe.counters.status(431)
			x.cn.writeError(431)
			return false
		}
		if !deadlineSet && x.w > x.r {
			// A partial head: the rest must come within http_request.
			x.cn.c.SetReadDeadline(time.Now().Add(x.fe.t.HTTPRequest.D()))
			deadlineSet = true
		}
		m, err := x.cn.c.Read(buf[x.w:])
		x.w += m
		x.fe.counters.BytesIn.Add(int64(m))
		if err != nil {
			if isTimeout(err) && x.w > x.r {
				x.fe.counters.ReqErrors.Add(1)
				x.fe.counters.Timeouts.Add(1)
				x.fe.counters.status(408)
				x.cn.writeError(408)
			} else if x.w > x.r && !errors.Is(err, io.EOF) {
				x.fe.counters.ReqErrors.Add(1)
			}
			return false
		}
	}
}
