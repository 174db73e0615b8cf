package proxy

import (
	"fmt"

	"github.com/fulcrum-lb/fulcrum/proxy/balance"
	"github.com/fulcrum-lb/fulcrum/proxy/h1"
	"github.com/fulcrum-lb/fulcrum/state"
)

// runtime is one compiled, immutable config: what a request is served by
// from start to end, however many swaps happen meanwhile.
type runtime struct {
	cfg       *state.Config
	frontends []*frontend
	backends  []*backend
}

type frontend struct {
	name     string
	mode     state.Mode
	maxconn  int
	sem      semaphore
	backend  *backend
	t        state.Timeouts
	limits   h1.Limits
	bufs     *bufPool
	xff      bool
	fwd      bool
	counters *Counters
}

type backend struct {
	name       string
	mode       state.Mode
	balance    string
	bal        balance.Balancer
	servers    []*server
	retries    int
	redispatch bool
	t          state.Timeouts
	limit      *limiter
	counters   *Counters
	hdrName    string // hdr(NAME) balancing
	needsHTTP  bool
	health     Health // nil: every server usable at its configured weight
}

// server is one backend member. Its pool, limiter and counters are carried
// over a swap when its identity (backend, name, address, maxconn) is
// unchanged, so reloads neither reset stats nor drop idle connections.
type server struct {
	name     string
	addr     string
	def      state.Server
	limit    *limiter
	pool     *pool
	counters *Counters
	sessions *sessionSet // connections in use, kept only for shutdown-sessions
}

// compile builds a runtime from a validated config, reusing what it can of
// prev (which may be nil).
func compile(cfg *state.Config, prev *runtime, h Health, bufs func(size int) *bufPool) (*runtime, error) {
	rt := &runtime{cfg: cfg}
	old := indexRuntime(prev)
	byName := map[string]*backend{}
	for _, bc := range cfg.Backends {
		b, err := compileBackend(bc, old, h)
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", bc.Name, err)
		}
		byName[b.name] = b
		rt.backends = append(rt.backends, b)
	}
	for _, fc := range cfg.Frontends {
		f := &frontend{
			name: fc.Name, mode: fc.Mode, maxconn: fc.MaxConn,
			backend: byName[fc.DefaultBackend], t: *fc.Timeouts,
			xff: fc.ForwardFor, fwd: fc.Forwarded,
			limits: h1.Limits{
				MaxRequestLine: int(cfg.Global.MaxRequestLine),
				MaxHeaderBytes: int(cfg.Global.MaxHeaderSize),
			},
			counters: &Counters{},
			bufs:     bufs(max(16<<10, int(cfg.Global.MaxHeaderSize))),
		}
		if o := old.frontends[fc.Name]; o != nil {
			f.counters = o.counters
			if o.maxconn == f.maxconn {
				f.sem = o.sem
			}
		}
		if f.sem == nil && f.maxconn > 0 {
			f.sem = make(semaphore, f.maxconn)
		}
		rt.frontends = append(rt.frontends, f)
	}
	return rt, nil
}

type runtimeIndex struct {
	frontends map[string]*frontend
	backends  map[string]*backend
	servers   map[string]*server // key: backend/server
}

func indexRuntime(rt *runtime) runtimeIndex {
	ix := runtimeIndex{map[string]*frontend{}, map[string]*backend{}, map[string]*server{}}
	if rt == nil {
		return ix
	}
	for _, f := range rt.frontends {
		ix.frontends[f.name] = f
	}
	for _, b := range rt.backends {
		ix.backends[b.name] = b
		for _, s := range b.servers {
			ix.servers[b.name+"/"+s.name] = s
		}
	}
	return ix
}

func compileBackend(bc state.Backend, old runtimeIndex, h Health) (*backend, error) {
	spec, err := state.ParseBalance(bc.Balance)
	if err != nil {
		return nil, err
	}
	b := &backend{
		name: bc.Name, mode: bc.Mode, balance: bc.Balance,
		retries: *bc.Retries, redispatch: *bc.Redispatch, t: *bc.Timeouts,
		limit: newLimiter(bc.MaxConn), counters: &Counters{},
		hdrName: spec.Param, needsHTTP: spec.NeedsHTTP(), health: h,
	}
	if o := old.backends[bc.Name]; o != nil {
		b.counters = o.counters
		if o.limit.max == bc.MaxConn {
			b.limit = o.limit
		}
	}
	views := make([]balance.Server, len(bc.Servers))
	for i, sc := range bc.Servers {
		s := &server{name: sc.Name, addr: sc.Address, def: sc, counters: &Counters{}}
		if o := old.servers[bc.Name+"/"+sc.Name]; o != nil {
			s.counters = o.counters
			if o.addr == sc.Address && o.def.MaxConn == sc.MaxConn {
				s.limit, s.pool = o.limit, o.pool
			}
		}
		if s.limit == nil {
			s.limit = newLimiter(sc.MaxConn)
			s.pool = newPool(sc.Address)
		}
		if hc, checked := state.ServerCheck(&bc, &sc); checked && hc.OnMarkedDown == state.OnMarkedDownShutdownSessions {
			s.sessions = &sessionSet{}
		}
		b.servers = append(b.servers, s)
		views[i] = balance.Server{Name: sc.Name, Weight: sc.EffectiveWeight(), Backup: sc.Backup, MaxConn: sc.MaxConn}
	}
	b.bal, err = balance.New(spec, bc.HashType, views)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// pools returns the set of pools in use, to close those a swap dropped.
func (rt *runtime) pools() map[*pool]bool {
	m := map[*pool]bool{}
	if rt == nil {
		return m
	}
	for _, b := range rt.backends {
		for _, s := range b.servers {
			m[s.pool] = true
		}
	}
	return m
}
