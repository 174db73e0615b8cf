package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// DefaultMaxConcurrent bounds the checks running at once.
const DefaultMaxConcurrent = 64

// Options configure a Monitor. The zero value is usable.
type Options struct {
	// Clock drives scheduling and time stamps; nil: the real clock.
	Clock Clock
	// Logger receives the transitions; nil: slog.Default().
	Logger *slog.Logger
	// Observer hears this node's transitions; nil: Local, so that this
	// node's observations are the verdict.
	Observer Observer
	// OnVerdict, if set, is called when a server's verdict flips (for
	// on_marked_down: shutdown-sessions). It is called with the server's
	// lock held and must not block.
	OnVerdict func(backend, server string, up bool)
	// MaxConcurrent bounds the checks running at once; 0: 64.
	MaxConcurrent int
	// Checker is passed to the checkers (root CAs, dialer).
	Checker CheckerOptions
	// NewChecker builds a server's main checker; nil: NewChecker.
	NewChecker func(s *state.Server, hc *state.HealthCheck, o CheckerOptions) (Checker, error)
	// Spread returns the delay of a server's first check, so that checks
	// spread over the interval; nil: uniformly random in [0, interval).
	Spread func(interval time.Duration) time.Duration
}

// Monitor checks the servers of one config and holds their health state.
// Every checked server has one goroutine (and one more for an agent);
// Start starts them and Close stops them. The verdict methods (Usable,
// Weight, State) are safe for concurrent use and cheap.
type Monitor struct {
	opts     Options
	clock    Clock
	log      *slog.Logger
	observer Observer
	sem      chan struct{}

	idx atomic.Pointer[index]

	mu      sync.Mutex // serialises Start, Update and Close
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	closed  bool
	wg      sync.WaitGroup
}

// index is immutable once published.
type index struct {
	servers map[string]map[string]*entry
	order   []*entry
}

const (
	observeNone int32 = iota
	observeL4
	observeL7
)

// entry is one server's health state.
type entry struct {
	backend, name, addr string
	key                 Key
	checked             bool
	checker, agent      Checker
	wake                chan struct{}
	cancel              context.CancelFunc // guarded by Monitor.mu

	// Read on the hot path.
	weight         atomic.Int32 // configured
	weightOverride atomic.Int32 // operator's, -1: none
	agentPct       atomic.Int32 // -1: none
	slowstart      atomic.Int64 // time.Duration
	upSince        atomic.Int64 // clock UnixNano when the verdict went UP; 0: no ramp
	verdictUp      atomic.Bool
	localUp        atomic.Bool
	backup         atomic.Bool
	admin          atomic.Int32 // operator's Admin
	agentAdmin     atomic.Int32
	observe        atomic.Int32

	mu         sync.Mutex
	removed    bool
	hc         state.HealthCheck
	agentEvery time.Duration
	tracker    Tracker
	passive    Passive
	agentDown  bool
	fastOnce   bool
	last       Result
	lastCheck  time.Time
	lastAgent  *Result
	lastChange time.Time
	chkFail    uint64
	chkDown    uint64
}

// New returns a Monitor for cfg (parsed by state.Parse: defaulted and
// valid). It checks nothing until Start.
func New(cfg *state.Config, opts Options) (*Monitor, error) {
	m := &Monitor{opts: opts, clock: opts.Clock, log: opts.Logger, observer: opts.Observer}
	if m.clock == nil {
		m.clock = RealClock()
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	if m.observer == nil {
		m.observer = NewLocal(m)
	}
	if m.opts.NewChecker == nil {
		m.opts.NewChecker = NewChecker
	}
	if m.opts.Spread == nil {
		m.opts.Spread = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d)
		}
	}
	n := opts.MaxConcurrent
	if n <= 0 {
		n = DefaultMaxConcurrent
	}
	m.sem = make(chan struct{}, n)
	idx, _, _, err := m.build(cfg, &index{})
	if err != nil {
		return nil, err
	}
	m.idx.Store(idx)
	return m, nil
}

type kept struct {
	e  *entry
	s  *state.Server
	hc state.HealthCheck
}

// build makes the index of cfg, reusing old's entries whose Key is
// unchanged. It changes nothing that is published.
func (m *Monitor) build(cfg *state.Config, old *index) (*index, []*entry, []kept, error) {
	idx := &index{servers: map[string]map[string]*entry{}}
	var fresh []*entry
	var keep []kept
	now := m.clock.Now()
	for i := range cfg.Backends {
		b := &cfg.Backends[i]
		byName := map[string]*entry{}
		idx.servers[b.Name] = byName
		for j := range b.Servers {
			s := &b.Servers[j]
			key := KeyOf(b, s)
			hc, _ := state.ServerCheck(b, s)
			prev := old.servers[b.Name][s.Name]
			var e *entry
			if prev != nil && prev.key == key {
				e = prev
				keep = append(keep, kept{e, s, hc})
			} else {
				var err error
				if e, err = m.newEntry(b, s, key, hc, prev, now); err != nil {
					return nil, nil, nil, fmt.Errorf("backend %s server %s: %w", b.Name, s.Name, err)
				}
				fresh = append(fresh, e)
			}
			byName[s.Name] = e
			idx.order = append(idx.order, e)
		}
	}
	return idx, fresh, keep, nil
}

// newEntry makes the state of a new server (or of one whose Key
// changed: carry, if any, gives it the operator's admin state and weight).
func (m *Monitor) newEntry(b *state.Backend, s *state.Server, key Key, hc state.HealthCheck, carry *entry, now time.Time) (*entry, error) {
	e := &entry{backend: b.Name, name: s.Name, addr: s.Address, key: key, wake: make(chan struct{}, 1), lastChange: now}
	_, e.checked = state.ServerCheck(b, s)
	var err error
	if e.checked {
		if e.checker, err = m.opts.NewChecker(s, &hc, m.opts.Checker); err != nil {
			return nil, err
		}
	}
	if s.AgentPort != 0 {
		if e.agent, err = NewAgentChecker(s, s.AgentPort, m.opts.Checker); err != nil {
			return nil, err
		}
	}
	up := !e.checked || hc.InitState == state.InitStateUp
	e.tracker = NewTracker(hc.Rise, hc.Fall, up)
	e.localUp.Store(up)
	e.verdictUp.Store(up)
	e.weightOverride.Store(-1)
	e.agentPct.Store(-1)
	if carry != nil {
		e.admin.Store(carry.admin.Load())
		e.weightOverride.Store(carry.weightOverride.Load())
	}
	e.configure(s, hc)
	return e, nil
}

// configure applies the settings that may change without resetting the
// state.
func (e *entry) configure(s *state.Server, hc state.HealthCheck) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hc = hc
	e.weight.Store(int32(s.EffectiveWeight()))
	e.backup.Store(s.Backup)
	e.slowstart.Store(int64(s.Slowstart))
	e.agentEvery = s.AgentInterval.D()
	if e.agentEvery <= 0 {
		e.agentEvery = hc.Interval.D()
	}
	switch {
	case !e.checked || hc.Observe == state.ObserveNone:
		e.observe.Store(observeNone)
	case hc.Observe == state.ObserveLayer7:
		e.observe.Store(observeL7)
	default:
		e.observe.Store(observeL4)
	}
	e.passive.Limit, e.passive.Period = hc.ErrorLimit, hc.Interval.D()
	if e.tracker.Rise() != hc.Rise || e.tracker.Fall() != hc.Fall {
		e.tracker.Reconfigure(hc.Rise, hc.Fall)
	}
}

// Start starts checking. The checks stop when ctx is done or at Close.
func (m *Monitor) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.closed {
		return errors.New("health: monitor already started or closed")
	}
	m.started = true
	m.ctx, m.cancel = context.WithCancel(ctx)
	for _, e := range m.idx.Load().order {
		m.startEntry(e)
	}
	return nil
}

// startEntry starts e's goroutines; m.mu is held.
func (m *Monitor) startEntry(e *entry) {
	ctx, cancel := context.WithCancel(m.ctx)
	e.cancel = cancel
	if e.checked {
		m.wg.Add(1)
		go m.loop(ctx, e, false)
	}
	if e.agent != nil {
		m.wg.Add(1)
		go m.loop(ctx, e, true)
	}
}

// Update switches to a new config (parsed by state.Parse). Servers whose
// Key is unchanged keep their health state and take the new timing,
// rise/fall, weight and slowstart; the others start afresh at their
// init_state, keeping the operator's admin state and weight when only
// their check changed. Removed servers stop being checked. On error
// nothing changes.
func (m *Monitor) Update(cfg *state.Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.idx.Load()
	next, fresh, keep, err := m.build(cfg, old)
	if err != nil {
		return err
	}
	for _, k := range keep {
		k.e.configure(k.s, k.hc)
	}
	inNext := make(map[*entry]bool, len(next.order))
	for _, e := range next.order {
		inNext[e] = true
	}
	for _, e := range old.order {
		if inNext[e] {
			continue
		}
		// Mark it removed before publishing the new index, so that a
		// check finishing late cannot report a verdict onto its successor.
		e.mu.Lock()
		e.removed = true
		e.mu.Unlock()
		if e.cancel != nil {
			e.cancel()
		}
	}
	m.idx.Store(next)
	if m.started && !m.closed {
		for _, e := range fresh {
			m.startEntry(e)
		}
	}
	return nil
}

// Close stops every check and waits for the goroutines to end.
func (m *Monitor) Close() error {
	m.mu.Lock()
	m.closed = true
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return nil
}

// loop runs the checks of e (its agent checks when agent is set).
func (m *Monitor) loop(ctx context.Context, e *entry, agent bool) {
	defer m.wg.Done()
	checker := e.checker
	var wake <-chan struct{}
	if agent {
		checker = e.agent
	} else {
		wake = e.wake
	}
	deadline := m.clock.Now().Add(m.opts.Spread(e.interval(agent)))
	for {
		t := m.clock.NewTimer(deadline.Sub(m.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
			// Passive observation changed the state: reschedule.
			t.Stop()
			if next := m.clock.Now().Add(e.next()); next.Before(deadline) {
				deadline = next
			}
			continue
		case <-t.C():
		}
		select {
		case m.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		res := m.run(ctx, e, checker)
		<-m.sem
		if ctx.Err() != nil {
			return // a cancelled check is not a failed one
		}
		if agent {
			m.recordAgent(e, res)
		} else {
			m.recordCheck(e, res)
		}
		deadline = m.clock.Now().Add(e.interval(agent))
	}
}

// interval is the delay before e's next check (or agent check).
func (e *entry) interval(agent bool) time.Duration {
	if agent {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.agentEvery
	}
	return e.next()
}

func (e *entry) next() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fastOnce {
		e.fastOnce = false
		return e.hc.FastInterval.D()
	}
	return e.tracker.Next(Intervals{Inter: e.hc.Interval.D(), Fast: e.hc.FastInterval.D(), Down: e.hc.DownInterval.D()})
}

// run runs one check under the check timeout. A panic is a failed check,
// logged; it never reaches the process.
func (m *Monitor) run(ctx context.Context, e *entry, c Checker) (res Result) {
	e.mu.Lock()
	timeout := e.hc.Timeout.D()
	e.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("health check panicked", "backend", e.backend, "server", e.name, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res = Result{Status: StatusIntErr, Reason: "check panicked", Detail: fmt.Sprint(p), Duration: time.Since(start)}
		}
	}()
	return c.Check(cctx)
}

func (e *entry) upLocked() bool { return e.tracker.Up() && !e.agentDown }

func (m *Monitor) recordCheck(e *entry, r Result) {
	now := m.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	was := e.upLocked()
	e.last, e.lastCheck = r, now
	if r.Agent != nil {
		m.applyAgentLocked(e, *r.Agent, now)
	}
	if r.OK {
		e.tracker.Success()
	} else {
		e.chkFail++
		e.tracker.Failure()
	}
	m.settleLocked(e, was, now, r)
}

// recordAgent applies an agent check's reply. An agent that cannot be
// reached changes nothing: connectivity is the main check's business.
func (m *Monitor) recordAgent(e *entry, r Result) {
	now := m.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastAgent = &r
	if r.Agent == nil {
		return
	}
	was := e.upLocked()
	m.applyAgentLocked(e, *r.Agent, now)
	m.settleLocked(e, was, now, r)
}

func (m *Monitor) applyAgentLocked(e *entry, a AgentReply, now time.Time) {
	if a.SetAdmin {
		if old := Admin(e.agentAdmin.Swap(int32(a.Admin))); old != a.Admin {
			m.adminChanged(e, old, a.Admin, "agent", now)
		}
	}
	if a.Down {
		e.agentDown = true
	} else if a.Up {
		e.agentDown = false
	}
	if a.WeightPct >= 0 {
		e.agentPct.Store(int32(a.WeightPct))
	}
}

// settleLocked reports a change of e's local state, if there is one.
func (m *Monitor) settleLocked(e *entry, was bool, now time.Time, r Result) {
	up := e.upLocked()
	if up == was || e.removed {
		return
	}
	e.localUp.Store(up)
	e.lastChange = now
	if !up {
		e.chkDown++
	}
	m.logTransition(e, up, r)
	m.observer.ServerSeen(e.backend, e.name, up, r.Reason)
}

func (m *Monitor) logTransition(e *entry, up bool, r Result) {
	active, backup := m.countUsable(e.backend)
	var b strings.Builder
	word, tail, level := "DOWN", "left", slog.LevelWarn
	if up {
		word, tail, level = "UP", "online", slog.LevelInfo
	}
	fmt.Fprintf(&b, "server %s/%s is %s, reason: %s", e.backend, e.name, word, r.Reason)
	if r.Detail != "" {
		fmt.Fprintf(&b, ", info: %q", r.Detail)
	}
	if r.Code != 0 {
		fmt.Fprintf(&b, ", code: %d", r.Code)
	}
	if r.Status != StatusHana {
		fmt.Fprintf(&b, ", check duration: %dms", r.Duration.Milliseconds())
	}
	fmt.Fprintf(&b, ", %d active and %d backup servers %s", active, backup, tail)
	m.log.Log(context.Background(), level, b.String(), "backend", e.backend, "server", e.name, "status", string(r.Status))
	if !up && active == 0 && backup == 0 {
		m.log.Error("backend "+e.backend+" has no server available!", "backend", e.backend)
	}
}

// countUsable counts the servers of a backend this node sees usable.
func (m *Monitor) countUsable(backend string) (active, backup int) {
	for _, e := range m.idx.Load().servers[backend] {
		if !e.localUp.Load() || Admin(e.admin.Load()) != AdminReady || Admin(e.agentAdmin.Load()) != AdminReady {
			continue
		}
		if e.backup.Load() {
			backup++
		} else {
			active++
		}
	}
	return active, backup
}

func (m *Monitor) adminChanged(e *entry, old, now Admin, by string, at time.Time) {
	if old == AdminMaint && now != AdminMaint && e.verdictUp.Load() {
		e.upSince.Store(at.UnixNano()) // leaving maintenance ramps up again
	}
	var what string
	switch now {
	case AdminMaint:
		what = "is going DOWN for maintenance"
	case AdminDrain:
		what = "is going to DRAIN mode"
	default:
		what = "is leaving " + old.String() + " mode"
	}
	m.log.Info(fmt.Sprintf("server %s/%s %s (by %s)", e.backend, e.name, what, by), "backend", e.backend, "server", e.name, "admin", now.String())
}
