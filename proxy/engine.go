// Package proxy is Fulcrum's data plane: listeners, the HTTP/1.1 and TCP
// proxies, balancing, server connection pools, limits and counters. It
// imports only the schema types of package state and never waits on the
// control plane.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Engine runs one proxy config at a time and swaps it atomically on Apply.
type Engine struct {
	log *slog.Logger

	applyMu   sync.Mutex // serialises Apply and Shutdown
	rt        atomic.Pointer[runtime]
	listeners map[string]*listener
	global    atomic.Pointer[semaphore] // global.maxconn; nil: unlimited
	globalMax int

	connMu   sync.Mutex
	conns    map[*conn]struct{}
	connWG   sync.WaitGroup
	stopping atomic.Bool
	draining atomic.Bool   // Drain: no keep-alive reuse
	inflight atomic.Int64  // requests being served
	stopCh   chan struct{} // closed when Shutdown begins

	bufPools  map[int]*bufPool // by buffer size; guarded by applyMu
	exchanges sync.Pool        // *exchange, borrowed while a connection is served
	parker    *parker          // nil: idle connections keep their goroutine
	// Idle workers (goroutines between connections) wait on tasks; see
	// Engine.run. idleWorkers counts them.
	tasks       chan task
	idleWorkers atomic.Int32
	refused     []netip.Addr // see Refuse; guarded by applyMu
	health      Health       // guarded by applyMu

	janitorStop chan struct{}
	janitorDone chan struct{}
}

// New returns an engine that serves nothing until Apply.
func New(log *slog.Logger) *Engine {
	e := &Engine{
		log:         log,
		listeners:   map[string]*listener{},
		conns:       map[*conn]struct{}{},
		bufPools:    map[int]*bufPool{},
		stopCh:      make(chan struct{}),
		janitorStop: make(chan struct{}),
		janitorDone: make(chan struct{}),
		tasks:       make(chan task),
	}
	p, err := newParker()
	if err != nil {
		log.Warn("idle connections will keep their goroutines", "err", err)
	} else {
		e.parker = p
	}
	go e.janitor()
	return e
}

// maxIdleWorkers bounds the goroutines kept waiting for the next
// connection (each keeps the stack its connections grew).
const maxIdleWorkers = 256

// A task is a connection to serve: a new one (fe, its frontend) or one the
// parker found readable (fe nil).
type task struct {
	cn *conn
	fe *frontend
}

// run serves t on a worker that is waiting for one, or on a new one: a
// goroutine whose stack has already grown saves each new connection the
// growing of a fresh one's.
func (e *Engine) run(t task) {
	select {
	case e.tasks <- t:
	default:
		go e.worker(t)
	}
}

func (e *Engine) worker(t task) {
	for {
		if t.fe != nil {
			t.cn.serve(t.fe)
		} else {
			t.cn.resume()
		}
		if e.idleWorkers.Add(1) > maxIdleWorkers {
			e.idleWorkers.Add(-1)
			return
		}
		select {
		case t = <-e.tasks:
			e.idleWorkers.Add(-1)
		case <-e.stopCh:
			e.idleWorkers.Add(-1)
			return
		}
	}
}

// getExchange borrows the per-request state for cn's goroutine.
func (e *Engine) getExchange(cn *conn) *exchange {
	x, _ := e.exchanges.Get().(*exchange)
	if x == nil {
		x = &exchange{}
	}
	x.cn = cn
	return x
}

func (e *Engine) putExchange(x *exchange) {
	x.releaseIn()
	// Keep the parsers' slices (their capacity is what spares the next
	// connection's parses from growing them), dropping what they point to.
	req, resp := x.req, x.resp
	*x = exchange{}
	x.req.Headers, x.req.ConnTokens = clearSlice(req.Headers), clearSlice(req.ConnTokens)
	x.resp.Headers, x.resp.ConnTokens = clearSlice(resp.Headers), clearSlice(resp.ConnTokens)
	e.exchanges.Put(x)
}

func clearSlice[T any](s []T) []T {
	clear(s[:cap(s)])
	return s[:0]
}

// Apply compiles cfg (already validated) and swaps it in: listeners whose
// address is unchanged stay open, new ones are bound, dropped ones closed;
// requests in flight finish on the config they began on. On error nothing
// changes.
func (e *Engine) Apply(cfg *state.Config) error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	if e.stopping.Load() {
		return errors.New("engine is stopping")
	}
	prev := e.rt.Load()
	rt, err := compile(cfg, prev, e.health, e.bufPool)
	if err != nil {
		return fmt.Errorf("compile config: %w", err)
	}
	// Bind every new address first, so a bind failure changes nothing.
	want := map[string]*frontend{}
	fresh := map[string]*listener{}
	for _, f := range rt.frontends {
		for _, a := range cfgBinds(cfg, f.name) {
			want[a] = f
			if e.listeners[a] != nil || fresh[a] != nil {
				continue
			}
			ln, err := listen(a)
			if err != nil {
				for _, l := range fresh {
					l.ln.Close()
				}
				return fmt.Errorf("frontend %s: %w", f.name, err)
			}
			l := &listener{addr: a, ln: ln, eng: e, done: make(chan struct{})}
			if len(e.refused) > 0 {
				if err := l.setRefuse(e.refused); err != nil {
					e.log.Warn("new listener takes connections for refused addresses", "bind", a, "err", err)
				}
			}
			fresh[a] = l
		}
	}
	if cfg.Global.MaxConn != e.globalMax {
		// Connections keep releasing to the semaphore they took a slot of.
		var g *semaphore
		if cfg.Global.MaxConn > 0 {
			s := make(semaphore, cfg.Global.MaxConn)
			g = &s
		}
		e.global.Store(g)
		e.globalMax = cfg.Global.MaxConn
	}
	e.rt.Store(rt)
	for a, l := range e.listeners {
		if f := want[a]; f != nil {
			l.fe.Store(f)
			l.smartAccept(f.mode == state.ModeHTTP)
			continue
		}
		l.close()
		delete(e.listeners, a)
		e.log.Info("listener closed", "bind", a)
	}
	for a, l := range fresh {
		l.fe.Store(want[a])
		l.smartAccept(want[a].mode == state.ModeHTTP)
		e.listeners[a] = l
		l.wg.Add(1)
		go l.serve()
		e.log.Info("listening", "bind", a, "frontend", want[a].name)
	}
	keep := rt.pools()
	for p := range prev.pools() {
		if !keep[p] {
			p.close()
		}
	}
	return nil
}

func cfgBinds(cfg *state.Config, name string) []string {
	for _, f := range cfg.Frontends {
		if f.Name == name {
			return f.Bind
		}
	}
	return nil
}

// Addrs returns the bound address of every listener, keyed by configured
// address (useful when a config binds port 0).
func (e *Engine) Addrs() map[string]net.Addr {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	m := make(map[string]net.Addr, len(e.listeners))
	for a, l := range e.listeners {
		m[a] = l.ln.Addr()
	}
	return m
}

// Stats returns a snapshot of the running config's counters.
func (e *Engine) Stats() Stats {
	rt := e.rt.Load()
	if rt == nil {
		return Stats{Frontends: []FrontendStats{}, Backends: []BackendStats{}}
	}
	return rt.stats()
}

// Shutdown stops accepting, closes idle keep-alive connections and waits
// for in-flight requests until ctx is done, then closes what is left.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.applyMu.Lock()
	if e.stopping.Swap(true) {
		e.applyMu.Unlock()
		return errors.New("engine already stopped")
	}
	close(e.stopCh)
	for a, l := range e.listeners {
		l.close()
		delete(e.listeners, a)
	}
	e.applyMu.Unlock()
	close(e.janitorStop)
	<-e.janitorDone

	e.closeIdle(true)
	done := make(chan struct{})
	go func() {
		e.connWG.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("hard stop: %w", ctx.Err())
		e.connMu.Lock()
		for c := range e.conns {
			c.c.Close()
		}
		e.connMu.Unlock()
		<-done
	}
	if e.parker != nil {
		e.parker.stop()
	}
	for p := range e.rt.Load().pools() {
		p.close()
	}
	return err
}

// closeIdle closes every keep-alive client connection waiting for its
// next request, and with fresh also those waiting for their first.
func (e *Engine) closeIdle(fresh bool) {
	var parked []*conn
	e.connMu.Lock()
	for c := range e.conns {
		if c.state.CompareAndSwap(connIdle, connClosing) || fresh && c.state.CompareAndSwap(connNew, connClosing) {
			c.c.Close()
			continue
		}
		if (fresh || c.served.Load()) && c.state.CompareAndSwap(connParked, connClosing) {
			parked = append(parked, c)
		}
	}
	e.connMu.Unlock()
	// A parked connection has no goroutine: its closer ends it.
	for _, c := range parked {
		e.parker.unpark(c)
		c.end()
	}
}

func (e *Engine) janitor() {
	defer close(e.janitorDone)
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.janitorStop:
			return
		case now := <-t.C:
			for p := range e.rt.Load().pools() {
				p.trim(now)
			}
		}
	}
}

// bufPool returns the shared pool of buffers of one size.
func (e *Engine) bufPool(size int) *bufPool {
	p := e.bufPools[size]
	if p == nil {
		p = newBufPool(size)
		e.bufPools[size] = p
	}
	return p
}

// globalSem returns the process-wide connection semaphore (nil: unlimited).
func (e *Engine) globalSem() semaphore {
	if g := e.global.Load(); g != nil {
		return *g
	}
	return nil
}

// Drain stops (on) or resumes keep-alive reuse: while draining, every
// response says Connection: close and idle keep-alive connections are
// closed, so clients open new connections (to wherever the VIP is now).
func (e *Engine) Drain(on bool) {
	e.draining.Store(on)
	if on {
		e.closeIdle(false)
	}
}

// InFlight is the number of requests being served.
func (e *Engine) InFlight() int64 { return e.inflight.Load() }

// closing reports whether connections should close after their current
// request.
func (e *Engine) closing() bool { return e.stopping.Load() || e.draining.Load() }
