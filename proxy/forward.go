package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/fulcrum-lb/fulcrum/proxy/balance"
	"github.com/fulcrum-lb/fulcrum/proxy/h1"
)

// errRetryable marks a failure on a reused server connection before the
// server said anything: the request can be sent again on a new connection.
var errRetryable = errors.New("reused server connection closed")

// forward sends the parsed request to a server and relays the response. It
// reports whether the client connection is still in a state to go on.
func (x *exchange) forward() bool {
	cn := x.cn
	x.cliAt = time.Now()
	cn.c.SetDeadline(x.cliAt.Add(x.fe.t.Client.D()))
	breq := x.balanceRequest()
	at := attempts{skip: -1, same: -1}
	for {
		status := x.connect(breq, &at)
		if status != 0 {
			return x.fail(status)
		}
		err := x.exchangeOnce()
		if err == nil {
			return true
		}
		if errors.Is(err, errRetryable) {
			// The pooled connection was stale; try a fresh one at no cost.
			x.dropServer()
			continue
		}
		return false
	}
}

// fail answers an error produced by the proxy itself.
func (x *exchange) fail(status int) bool {
	x.status = status
	x.keepClient = false
	x.cn.writeError(status)
	return false
}

func (x *exchange) balanceRequest() *balance.Request {
	if !x.be.needsHTTP && x.be.balance != "source" {
		return nil
	}
	br := &balance.Request{Source: x.cn.src.Addr()}
	if x.be.needsHTTP {
		path, query := x.req.Target, []byte(nil)
		for i, c := range path {
			if c == '?' {
				path, query = path[:i], path[i+1:]
				break
			}
		}
		br.Path, br.Query = path, query
		if x.be.hdrName != "" {
			br.Header = x.header
		}
	}
	return br
}

func (x *exchange) header(name string) []byte {
	for _, h := range x.req.Headers {
		if h1.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return nil
}

// attempts is the retry state of one request's connects.
type attempts struct {
	n    int // retries made
	skip int // server to avoid (redispatch), or -1
	same int // server to retry (no redispatch), or -1
}

// connect picks a server, waits for a slot on it and gets a connection,
// retrying refused connects (`retries`) on the same server; with
// `redispatch` the last retry goes to another server. It returns 0 or the status to answer.
func (x *exchange) connect(breq *balance.Request, at *attempts) int {
	be := x.be
	for {
		i := at.same
		if i < 0 {
			i = be.bal.Pick(breq, be, at.skip)
		}
		if i < 0 {
			return 503
		}
		s := be.servers[i]
		if !be.limit.acquire(be.t.Queue.D(), x.cn.eng.stopCh, be.counters) {
			be.counters.Denied.Add(1)
			return 503
		}
		if !s.limit.acquire(be.t.Queue.D(), x.cn.eng.stopCh, s.counters) {
			be.limit.release()
			s.counters.Denied.Add(1)
			return 503
		}
		x.srv = s
		s.counters.sessionStart()
		if sc := s.pool.get(time.Now()); sc != nil {
			x.sc = sc
			s.sessions.add(sc)
			return 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), be.t.Connect.D())
		sc, err := s.pool.dial(ctx, be.t.Connect.D())
		cancel()
		if err == nil {
			x.sc = sc
			s.sessions.add(sc)
			return 0
		}
		s.counters.ConnErrors.Add(1)
		be.counters.ConnErrors.Add(1)
		be.observeConnectFailure(s)
		x.releaseServer()
		if at.n >= be.retries {
			return 503
		}
		at.n++
		be.counters.Retries.Add(1)
		s.counters.Retries.Add(1)
		if be.redispatch && at.n == be.retries {
			// HAProxy's default `option redispatch`: the last retry goes to
			// another server.
			at.skip, at.same = i, -1
			be.counters.Redispatches.Add(1)
			s.counters.Redispatches.Add(1)
		} else {
			at.same = i
		}
	}
}

// releaseServer gives back the server's and backend's slots.
func (x *exchange) releaseServer() {
	if x.srv == nil {
		return
	}
	x.srv.counters.sessionEnd()
	x.srv.limit.release()
	x.be.limit.release()
	x.srv = nil
}

// dropServer closes the server connection and releases its slot.
func (x *exchange) dropServer() {
	if x.sc != nil {
		x.srv.sessions.remove(x.sc)
		x.sc.Close()
		x.sc = nil
	}
	x.releaseServer()
}

// doneServer returns a reusable server connection to its pool.
func (x *exchange) doneServer(reuse bool) {
	if x.sc != nil {
		x.srv.sessions.remove(x.sc)
		if reuse {
			x.sc.pool.put(x.sc, time.Now())
		} else {
			x.sc.Close()
		}
		x.sc = nil
	}
	x.releaseServer()
}

// exchangeOnce sends the request on x.sc and relays the response. A nil
// error means the exchange completed; errRetryable means nothing was
// relayed and the request may go to a fresh connection; any other error
// has already been answered or has broken the client connection.
func (x *exchange) exchangeOnce() error {
	sc := x.sc
	srv := x.srv
	x.srvAt = time.Now()
	sc.SetDeadline(x.srvAt.Add(x.be.t.Server.D()))
	if err := x.sendRequest(); err != nil {
		if errors.Is(err, errRetryable) {
			return err
		}
		if errors.Is(err, errClientSide) {
			x.dropServer()
			x.keepClient = false
			return err
		}
		srv.counters.RespErrors.Add(1)
		x.be.counters.RespErrors.Add(1)
		x.be.observeStatus(srv, 502)
		x.dropServer()
		x.fail(502)
		return err
	}
	return x.relayResponse()
}

var errClientSide = errors.New("client side failed")

// sendRequest writes the rewritten request head and streams its body.
func (x *exchange) sendRequest() error {
	req := &x.req
	kind := req.BodyKind()
	retryable := x.sc.reused && kind == h1.NoBody
	if x.sc.reused && kind != h1.NoBody && x.sc.closedByPeer() {
		return errRetryable
	}
	if x.out == nil {
		x.out = x.fe.bufs.get()
	}
	out := x.writeRequestHead((*x.out)[:0])
	x.r = x.headStart + req.HeadLen
	if req.Expect100 && kind != h1.NoBody && x.r == x.w {
		if _, err := x.cn.c.Write(continue100); err != nil {
			return errClientSide
		}
	}
	var body bodyCopier
	body.init(kind, req.ContentLength)
	// Send the body bytes already read along with the head.
	n, done, err := body.take((*x.in)[x.r:x.w])
	if err != nil {
		x.cn.writeError(400)
		x.fe.counters.ReqErrors.Add(1)
		x.status = 400
		return errClientSide
	}
	if len(out)+n <= cap(out) {
		out = append(out, (*x.in)[x.r:x.r+n]...)
		x.r += n
		n = 0
	}
	if _, err := x.sc.Write(out); err != nil {
		if retryable {
			return errRetryable
		}
		return err
	}
	x.countSent(len(out))
	if n > 0 {
		if _, err := x.sc.Write((*x.in)[x.r : x.r+n]); err != nil {
			return err
		}
		x.countSent(n)
		x.r += n
	}
	for !done {
		if x.r == x.w {
			x.r, x.w = 0, 0
		}
		now := time.Now()
		x.touchClient(now)
		x.touchServer(now)
		m, err := x.cn.c.Read((*x.in)[x.w:])
		x.w += m
		x.fe.counters.BytesIn.Add(int64(m))
		if m == 0 && err != nil {
			if isTimeout(err) {
				x.fe.counters.Timeouts.Add(1)
				x.status = 408
				x.cn.writeError(408)
			}
			return errClientSide
		}
		n, done, err = body.take((*x.in)[x.r:x.w])
		if err != nil {
			x.fe.counters.ReqErrors.Add(1)
			x.status = 400
			x.cn.writeError(400)
			return errClientSide
		}
		if _, err := x.sc.Write((*x.in)[x.r : x.r+n]); err != nil {
			return err
		}
		x.countSent(n)
		x.r += n
	}
	x.reqBodySent = true
	return nil
}

var continue100 = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// closedByPeer checks without blocking whether the server has closed an
// idle connection (or sent something unexpected on it).
func (sc *serverConn) closedByPeer() bool {
	var b [1]byte
	var ready bool
	var err error
	cerr := sc.rc.Control(func(fd uintptr) { ready, err = peekFD(fd, &b) })
	return cerr != nil || ready || err != nil
}

// bodyCopier tracks how much of a message body remains to be forwarded.
type bodyCopier struct {
	kind    h1.BodyKind
	remain  int64
	chunked h1.Chunked
}

func (b *bodyCopier) init(kind h1.BodyKind, length int64) {
	b.kind, b.remain = kind, length
	b.chunked.Reset()
}

// take returns how many bytes of p belong to the body and whether the body
// ends within them. A close-delimited body never ends here.
func (b *bodyCopier) take(p []byte) (int, bool, error) {
	switch b.kind {
	case h1.NoBody:
		return 0, true, nil
	case h1.LengthBody:
		n := int64(len(p))
		if n >= b.remain {
			n = b.remain
		}
		b.remain -= n
		return int(n), b.remain == 0, nil
	case h1.ChunkedBody:
		return b.chunked.Scan(p)
	}
	return len(p), false, nil
}

// countSent counts bytes sent to the server.
func (x *exchange) countSent(n int) {
	x.srv.counters.BytesIn.Add(int64(n))
	x.be.counters.BytesIn.Add(int64(n))
}

// touchClient and touchServer push the client's or the server's deadline
// forward while data moves, so that timeouts measure inactivity, as
// HAProxy's do. They re-arm at most every eighth of the timeout.
func (x *exchange) touchClient(now time.Time) {
	if d := x.fe.t.Client.D(); now.Sub(x.cliAt) > d/8 {
		x.cn.c.SetDeadline(now.Add(d))
		x.cliAt = now
	}
}

func (x *exchange) touchServer(now time.Time) {
	if d := x.be.t.Server.D(); now.Sub(x.srvAt) > d/8 {
		x.sc.SetDeadline(now.Add(d))
		x.srvAt = now
	}
}
