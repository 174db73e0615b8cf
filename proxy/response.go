package proxy

import (
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/fulcrum-lb/fulcrum/proxy/h1"
)

// relayResponse reads the server's response head, answers 502/504 when it
// is missing or malformed, and streams the response to the client.
func (x *exchange) relayResponse() error {
	sc, srv, be, fe := x.sc, x.srv, x.be, x.fe
	if x.sin == nil {
		x.sin = fe.bufs.get()
	}
	buf := *x.sin
	x.sr, x.sw = 0, 0
	var n int
	for {
		var err error
		n, err = h1.ParseResponse(buf[x.sr:x.sw], &x.resp, fe.limits)
		if errors.Is(err, h1.ErrIncomplete) && x.sw < len(buf) {
			m, rerr := sc.Read(buf[x.sw:])
			x.sw += m
			if rerr == nil {
				continue
			}
			if x.sw == 0 && sc.reused && x.req.BodyKind() == h1.NoBody && !isTimeout(rerr) {
				return errRetryable
			}
			err = rerr
		}
		if err != nil {
			status := 502
			if isTimeout(err) {
				status = 504
				be.counters.Timeouts.Add(1)
			}
			srv.counters.RespErrors.Add(1)
			be.counters.RespErrors.Add(1)
			srv.counters.status(status)
			be.observeStatus(srv, status)
			x.dropServer()
			x.fail(status)
			return err
		}
		if x.resp.Status >= 200 || x.resp.Status == 101 {
			break
		}
		// An interim response (100, 103): relay it and read on.
		if err := x.writeClient(buf[x.sr : x.sr+n]); err != nil {
			x.dropServer()
			return err
		}
		x.sr += n
	}
	x.status = x.resp.Status
	srv.counters.status(x.status)
	be.observeStatus(srv, x.status)
	if x.resp.Status == 101 {
		return x.upgrade(n)
	}
	kind := x.resp.BodyKind(x.req.Method)
	if kind == h1.CloseDelimited || x.cn.eng.closing() {
		// The end of the body is the close; or the process is stopping and
		// tells the client so.
		x.keepClient = false
	}
	bodyStart := x.sr + n
	out := x.writeResponseHead((*x.out)[:0])
	var body bodyCopier
	body.init(kind, x.resp.ContentLength)
	m, done, err := body.take(buf[bodyStart:x.sw])
	if err != nil {
		return x.brokenResponse(err)
	}
	if len(out)+m <= cap(out) {
		out = append(out, buf[bodyStart:bodyStart+m]...)
		bodyStart += m
		m = 0
	}
	if err := x.writeClient(out); err != nil {
		x.dropServer()
		return err
	}
	if m > 0 {
		if err := x.writeClient(buf[bodyStart : bodyStart+m]); err != nil {
			x.dropServer()
			return err
		}
	}
	extra := x.sw > bodyStart+m
	if !done && !extra && kind == h1.LengthBody && body.remain >= spliceMin {
		if err := x.spliceBody(body.remain); err != nil {
			if errors.Is(err, errClientSide) {
				return err
			}
			return x.brokenResponse(err)
		}
		done = true
	}
	for !done {
		now := time.Now()
		x.touchServer(now)
		x.touchClient(now)
		k, rerr := sc.Read(buf)
		if k > 0 {
			m, done, err = body.take(buf[:k])
			if err != nil {
				return x.brokenResponse(err)
			}
			extra = k > m
			if err := x.writeClient(buf[:m]); err != nil {
				x.dropServer()
				return err
			}
		}
		if rerr != nil && !done {
			if kind == h1.CloseDelimited && errors.Is(rerr, io.EOF) {
				break
			}
			return x.brokenResponse(rerr)
		}
	}
	reuse := kind != h1.CloseDelimited && x.resp.KeepAlive && x.reqBodySent && !extra
	x.doneServer(reuse)
	return nil
}

// spliceMin is the smallest rest of a body that is spliced (moved from
// the server's socket to the client's in the kernel, without a copy
// through user space) rather than copied through a buffer.
const spliceMin = 16 << 10

// spliceChunk bounds one splice, so that the deadlines are pushed forward
// between chunks (timeouts measure inactivity: a chunk must move within a
// timeout, as a buffer's write must).
const spliceChunk = 64 << 10

// spliceBody relays the last n bytes of a Content-Length body from the
// server to the client with splice(2) (Go's TCPConn.ReadFrom of a limited
// TCPConn).
func (x *exchange) spliceBody(n int64) error {
	for n > 0 {
		now := time.Now()
		x.touchServer(now)
		x.touchClient(now)
		chunk := min(n, spliceChunk)
		x.lr = io.LimitedReader{R: x.sc.TCPConn, N: chunk}
		k, err := x.cn.c.ReadFrom(&x.lr)
		x.fe.counters.BytesOut.Add(k)
		x.be.counters.BytesOut.Add(k)
		x.srv.counters.BytesOut.Add(k)
		n -= k
		switch {
		case err != nil && x.clientFailed(err, time.Now()):
			x.keepClient = false
			x.dropServer()
			return errClientSide
		case err != nil:
			return err
		case k < chunk:
			return io.ErrUnexpectedEOF // the server closed early
		}
	}
	return nil
}

// clientFailed tells, for a failed splice (which does not say which side
// failed), whether the client's side did: the client closed or reset its
// connection, or the client's deadline is the one that passed.
func (x *exchange) clientFailed(err error, now time.Time) bool {
	if isTimeout(err) {
		return !now.Before(x.cliAt.Add(x.fe.t.Client.D()))
	}
	var b [1]byte
	var ready bool
	var perr error
	cerr := x.cn.rc.Control(func(fd uintptr) { ready, perr = peekFD(fd, &b) })
	return cerr != nil || ready && perr != nil
}

// brokenResponse handles a server failure after the head was relayed: the
// client connection cannot carry on, as its response is cut short.
func (x *exchange) brokenResponse(err error) error {
	x.srv.counters.RespErrors.Add(1)
	x.be.counters.RespErrors.Add(1)
	if isTimeout(err) {
		x.be.counters.Timeouts.Add(1)
	}
	// Reset rather than close, so that the client cannot take a cut
	// close-delimited body for a whole one.
	x.cn.c.SetLinger(0)
	x.keepClient = false
	x.dropServer()
	return err
}

// writeClient writes to the client and counts the bytes.
func (x *exchange) writeClient(p []byte) error {
	n, err := x.cn.c.Write(p)
	x.fe.counters.BytesOut.Add(int64(n))
	x.be.counters.BytesOut.Add(int64(n))
	if x.srv != nil {
		x.srv.counters.BytesOut.Add(int64(n))
	}
	if err != nil {
		x.keepClient = false
		return errClientSide
	}
	return nil
}

// writeRequestHead appends the request head as the server gets it:
// hop-by-hop fields dropped, Expect answered by the proxy, the client's
// address added.
func (x *exchange) writeRequestHead(b []byte) []byte {
	req := &x.req
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.Target...)
	if req.Minor == 0 {
		b = append(b, " HTTP/1.0\r\n"...)
	} else {
		b = append(b, " HTTP/1.1\r\n"...)
	}
	for _, h := range req.Headers {
		switch {
		case h1.EqualFold(h.Name, "transfer-encoding"), h1.EqualFold(h.Name, "content-length"):
			continue // written once below, in canonical form
		case h1.EqualFold(h.Name, "upgrade"):
			if !req.Upgrade {
				continue
			}
		case h1.EqualFold(h.Name, "expect"):
			continue
		case req.IsHopByHop(h.Name):
			continue
		}
		b = appendHeader(b, h.Name, h.Value)
	}
	b = appendFraming(b, req.Chunked, req.ContentLength)
	if req.Upgrade {
		b = append(b, "Connection: upgrade\r\n"...)
	} else if req.Minor == 0 {
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	ip := x.cn.src.Addr().Unmap()
	if x.fe.xff {
		b = append(b, "X-Forwarded-For: "...)
		b = ip.AppendTo(b)
		b = append(b, "\r\n"...)
	}
	if x.fe.fwd {
		b = append(b, "Forwarded: for="...)
		if ip.Is6() {
			b = append(b, "\"["...)
			b = ip.AppendTo(b)
			b = append(b, "]\""...)
		} else {
			b = ip.AppendTo(b)
		}
		b = append(b, ";proto=http\r\n"...)
	}
	return append(b, "\r\n"...)
}

// writeResponseHead appends the response head as the client gets it.
func (x *exchange) writeResponseHead(b []byte) []byte {
	resp := &x.resp
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(resp.Status), 10)
	b = append(b, ' ')
	b = append(b, resp.Reason...)
	b = append(b, "\r\n"...)
	upgrade := resp.Status == 101
	for _, h := range resp.Headers {
		switch {
		case h1.EqualFold(h.Name, "transfer-encoding"), h1.EqualFold(h.Name, "content-length"):
			continue // written once below, in canonical form
		case h1.EqualFold(h.Name, "upgrade"):
			if !upgrade {
				continue
			}
		case resp.IsHopByHop(h.Name):
			continue
		}
		b = appendHeader(b, h.Name, h.Value)
	}
	if resp.Status >= 200 && resp.Status != 204 {
		// Content-Length stays even on HEAD and 304 answers, where it tells
		// the size the body would have.
		b = appendFraming(b, resp.Chunked, resp.ContentLength)
	}
	switch {
	case upgrade:
		b = append(b, "Connection: upgrade\r\n"...)
	case !x.keepClient:
		b = append(b, "Connection: close\r\n"...)
	case x.req.Minor == 0:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	return append(b, "\r\n"...)
}

func appendHeader(b, name, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// upgrade relays a 101 response and turns the exchange into a tunnel.
func (x *exchange) upgrade(headLen int) error {
	x.keepClient = false
	if !x.req.Upgrade {
		return x.brokenResponse(errors.New("101 without an upgrade request"))
	}
	out := x.writeResponseHead((*x.out)[:0])
	rest := x.sr + headLen
	out = append(out, (*x.sin)[rest:x.sw]...)
	if err := x.writeClient(out); err != nil {
		x.dropServer()
		return err
	}
	// Bytes the client sent after the request are the tunnel's first.
	if x.r < x.w {
		if _, err := x.sc.Write((*x.in)[x.r:x.w]); err != nil {
			x.dropServer()
			return err
		}
		x.r = x.w
	}
	x.releaseServerSide()
	x.releaseIn()
	pipe(x.cn, x.sc, x.be.t.Tunnel.D(), x.fe.bufs, x.fe.counters, x.srv.counters)
	x.dropServer()
	return errors.New("tunnel closed")
}

// appendFraming writes the body framing of a message whose parsed framing
// was validated: chunked, or a Content-Length (>= 0), or none.
func appendFraming(b []byte, chunked bool, length int64) []byte {
	switch {
	case chunked:
		return append(b, "Transfer-Encoding: chunked\r\n"...)
	case length >= 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, length, 10)
		return append(b, "\r\n"...)
	}
	return b
}
