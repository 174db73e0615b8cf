package proxy

import (
	"context"
	"net"
	"sync"
	"syscall"
	"time"
)

// maxIdlePerServer bounds the idle connections kept per server, like
// HAProxy's pool-max-conn; idleTTL is how long one may sit unused.
const (
	maxIdlePerServer = 1024
	idleTTL          = 30 * time.Second
)

// serverConn is a connection to a server; it holds no buffer while idle.
type serverConn struct {
	*net.TCPConn
	rc     syscall.RawConn
	pool   *pool
	idleAt time.Time
	reused bool
}

// pool keeps idle keep-alive connections to one server address, most
// recently used first (HAProxy's `http-reuse always`).
type pool struct {
	addr   string
	mu     sync.Mutex
	idle   []*serverConn
	closed bool
}

func newPool(addr string) *pool { return &pool{addr: addr} }

// get returns an idle connection, or nil.
func (p *pool) get(now time.Time) *serverConn {
	p.mu.Lock()
	for n := len(p.idle); n > 0; n = len(p.idle) {
		sc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		if now.Sub(sc.idleAt) < idleTTL {
			p.mu.Unlock()
			sc.reused = true
			return sc
		}
		sc.Close()
	}
	p.mu.Unlock()
	return nil
}

// put returns a healthy connection for reuse.
func (p *pool) put(sc *serverConn, now time.Time) {
	sc.idleAt = now
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdlePerServer {
		p.mu.Unlock()
		sc.Close()
		return
	}
	p.idle = append(p.idle, sc)
	p.mu.Unlock()
}

// dial opens a new connection to the server.
func (p *pool) dial(ctx context.Context, timeout time.Duration) (*serverConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: -1}
	c, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	rc, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, err
	}
	return &serverConn{TCPConn: tc, rc: rc, pool: p}, nil
}

// trim closes connections idle longer than idleTTL.
func (p *pool) trim(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := p.idle[:0]
	for _, sc := range p.idle {
		if now.Sub(sc.idleAt) < idleTTL {
			keep = append(keep, sc)
		} else {
			sc.Close()
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
}

// close closes every idle connection; later puts close theirs.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, sc := range p.idle {
		sc.Close()
	}
	p.idle = nil
}
