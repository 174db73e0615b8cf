package proxy

import "sync"

// Health is the engine's view of server health: the verdicts it reads on
// every balancing decision and the live-traffic outcomes it reports
// (HAProxy's `observe`). Package health's Monitor provides it; the engine
// never imports health (the cluster wires them), and with no Health every
// server is usable at its configured weight.
type Health interface {
	// Usable: UP and neither in MAINT nor DRAIN.
	Usable(backend, server string) bool
	// Weight is the effective weight (slowstart, agent, operator).
	Weight(backend, server string) int
	// ObserveL4 reports a connection outcome to the server.
	ObserveL4(backend, server string, ok bool)
	// ObserveL7 reports an HTTP status from (or on behalf of) the server.
	ObserveL7(backend, server string, status int)
}

// SetHealth makes the engine read verdicts from h from the next Apply on.
// Call it before the first Apply.
func (e *Engine) SetHealth(h Health) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.health = h
}

// Usable implements balance.Load.
func (b *backend) Usable(i int) bool {
	if b.health == nil {
		return true
	}
	return b.health.Usable(b.name, b.servers[i].name)
}

// Weight implements balance.Load: the server's current effective weight.
func (b *backend) Weight(i int) int {
	if b.health == nil {
		return b.servers[i].def.EffectiveWeight()
	}
	return b.health.Weight(b.name, b.servers[i].name)
}

// Active implements balance.Load.
func (b *backend) Active(i int) int64 { return b.servers[i].limit.load() }

// observeConnect reports a failed connect (passive layer-4 observation).
func (b *backend) observeConnectFailure(s *server) {
	if b.health != nil {
		b.health.ObserveL4(b.name, s.name, false)
	}
}

// observeStatus reports a 5xx from, or produced because of, the server
// (passive layer-7 observation). Other statuses cost nothing.
func (b *backend) observeStatus(s *server, status int) {
	if b.health != nil && status >= 500 {
		b.health.ObserveL7(b.name, s.name, status)
	}
}

// ShutdownSessions closes every connection open to a server, for
// `on_marked_down: shutdown-sessions`: the requests on them are cut.
func (e *Engine) ShutdownSessions(backend, server string) int {
	rt := e.rt.Load()
	if rt == nil {
		return 0
	}
	for _, b := range rt.backends {
		if b.name != backend {
			continue
		}
		for _, s := range b.servers {
			if s.name == server {
				return s.sessions.closeAll()
			}
		}
	}
	return 0
}

// sessionSet tracks the server connections in use on one server, so that
// they can be cut when it is marked down. Nil (the common case) tracks
// nothing and costs nothing.
type sessionSet struct {
	mu    sync.Mutex
	conns map[*serverConn]struct{}
}

func (s *sessionSet) add(sc *serverConn) {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
}

func (s *sessionSet) remove(sc *serverConn) {
	if s == nil {
		return
	}
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

func (s *sessionSet) closeAll() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc := range s.conns {
		sc.Close()
	}
	return len(s.conns)
}
