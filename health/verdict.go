package health

import (
	"fmt"
	"time"
)

// Observer hears this node's health transitions, after rise/fall: server
// S of backend B was seen UP or DOWN, and why. It is called in order for
// each server, with that server's lock held: it must not block and must
// not call back into the Monitor except SetVerdict.
type Observer interface {
	ServerSeen(backend, server string, up bool, reason string)
}

// Verdicts is what the engine reads on every balancing decision. The
// Monitor's implementation takes no lock and allocates nothing.
type Verdicts interface {
	// Usable reports whether the server may take new sessions: its
	// verdict is UP and it is neither in MAINT nor DRAIN.
	Usable(backend, server string) bool
	// Weight is the effective weight: the configured one (or the runtime
	// override), scaled by the agent's percentage, ramped by slowstart.
	Weight(backend, server string) int
	// State is UP, DOWN, DRAIN or MAINT.
	State(backend, server string) State
}

// Local joins observation and verdict on a standalone node: a transition
// this node sees is the verdict at once. It is the Observer a Monitor
// uses when Options.Observer is nil, and a Verdicts reading that monitor.
type Local struct{ m *Monitor }

// NewLocal returns the Local seam of m.
func NewLocal(m *Monitor) *Local { return &Local{m: m} }

// ServerSeen implements Observer: it sets the verdict.
func (l *Local) ServerSeen(backend, server string, up bool, reason string) {
	l.m.SetVerdict(backend, server, up)
}

// Usable implements Verdicts.
func (l *Local) Usable(backend, server string) bool { return l.m.Usable(backend, server) }

// Weight implements Verdicts.
func (l *Local) Weight(backend, server string) int { return l.m.Weight(backend, server) }

// State implements Verdicts.
func (l *Local) State(backend, server string) State { return l.m.State(backend, server) }

var (
	_ Observer = (*Local)(nil)
	_ Verdicts = (*Local)(nil)
	_ Verdicts = (*Monitor)(nil)
)

// ServerStatus is one server's health for stats (`fulcrum stats`).
type ServerStatus struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Address string `json:"address"`
	Backup  bool   `json:"backup"`
	// State is the effective state, from the verdict and the admin states.
	State State `json:"state"`
	// LocalUp is this node's own observation (equal to the verdict on a
	// standalone node).
	LocalUp bool `json:"local_up"`
	Checked bool `json:"checked"`
	// CheckType is tcp, http, tls or agent; "" when unchecked.
	CheckType string `json:"check_type,omitempty"`
	// Health, Rise and Fall: HAProxy's "UP 2/3" (see Tracker).
	Health int `json:"health"`
	Rise   int `json:"rise"`
	Fall   int `json:"fall"`
	// Last is the last check's result; LastCheck is zero before the first.
	Last      Result    `json:"last"`
	LastCheck time.Time `json:"last_check"`
	// LastAgent is the last agent check's result, if the server has one.
	LastAgent *Result `json:"last_agent,omitempty"`
	// LastChange is the time of the last UP/DOWN change (or of the
	// server's creation); SinceChange is how long ago that was.
	LastChange  time.Time     `json:"last_change"`
	SinceChange time.Duration `json:"since_change"`
	// Weight is the effective weight; ConfiguredWeight the config's.
	Weight           int `json:"weight"`
	ConfiguredWeight int `json:"configured_weight"`
	// WeightOverride is the operator's runtime weight, -1 when none.
	WeightOverride int `json:"weight_override"`
	// Admin is the operator's admin state, AgentAdmin the agent's.
	Admin      Admin `json:"admin"`
	AgentAdmin Admin `json:"agent_admin"`
	// AgentWeight is the agent's weight percentage, -1 when none.
	AgentWeight int `json:"agent_weight"`
	// ChkFail counts failed checks, ChkDown UP to DOWN transitions.
	ChkFail uint64 `json:"chkfail"`
	ChkDown uint64 `json:"chkdown"`
	// PassiveErrors is the decayed count of errors seen in live traffic.
	PassiveErrors int `json:"passive_errors"`
}

func (m *Monitor) lookup(backend, server string) *entry {
	return m.idx.Load().servers[backend][server]
}

// SetVerdict sets the verdict of a server, the one the engine obeys: the
// Local observer calls it with this node's transitions; a cluster calls
// it with the agreed ones. It reports whether the server is known.
func (m *Monitor) SetVerdict(backend, server string, up bool) bool {
	e := m.lookup(backend, server)
	if e == nil {
		return false
	}
	if e.verdictUp.Swap(up) != up {
		if up {
			e.upSince.Store(m.clock.Now().UnixNano())
		}
		if m.opts.OnVerdict != nil {
			m.opts.OnVerdict(backend, server, up)
		}
	}
	return true
}

// SetAdmin sets the operator's admin state of a server (fulcrum server
// enable|disable|drain). It survives reloads while the server exists.
func (m *Monitor) SetAdmin(backend, server string, a Admin) error {
	e := m.lookup(backend, server)
	if e == nil {
		return fmt.Errorf("no server %s/%s", backend, server)
	}
	if a > AdminMaint {
		return fmt.Errorf("invalid admin state %d", a)
	}
	if old := Admin(e.admin.Swap(int32(a))); old != a {
		m.adminChanged(e, old, a, "operator", m.clock.Now())
	}
	return nil
}

// SetWeight sets the operator's runtime weight of a server (fulcrum
// server weight), 0 to 256; -1 returns to the configured weight.
func (m *Monitor) SetWeight(backend, server string, w int) error {
	e := m.lookup(backend, server)
	if e == nil {
		return fmt.Errorf("no server %s/%s", backend, server)
	}
	if w < -1 || w > 256 {
		return fmt.Errorf("weight %d out of range (0-256, or -1 to reset)", w)
	}
	e.weightOverride.Store(int32(w))
	return nil
}

// Usable implements Verdicts.
func (m *Monitor) Usable(backend, server string) bool {
	e := m.lookup(backend, server)
	return e != nil && e.state() == StateUp
}

// State implements Verdicts. An unknown server is DOWN.
func (m *Monitor) State(backend, server string) State {
	if e := m.lookup(backend, server); e != nil {
		return e.state()
	}
	return StateDown
}

// Weight implements Verdicts. An unknown server weighs 0.
func (m *Monitor) Weight(backend, server string) int {
	if e := m.lookup(backend, server); e != nil {
		return e.effectiveWeight(m.clock)
	}
	return 0
}

func (e *entry) state() State {
	admin, agent := Admin(e.admin.Load()), Admin(e.agentAdmin.Load())
	switch {
	case admin == AdminMaint || agent == AdminMaint:
		return StateMaint
	case !e.verdictUp.Load():
		return StateDown
	case admin == AdminDrain || agent == AdminDrain:
		return StateDrain
	}
	return StateUp
}

// EffectiveWeight is the server's weight at now: configured (or the
// operator's override), times the agent's percentage, ramped by slowstart.
func (e *entry) effectiveWeight(c Clock) int {
	w := int(e.weight.Load())
	if o := e.weightOverride.Load(); o >= 0 {
		w = int(o)
	}
	if p := int(e.agentPct.Load()); p >= 0 && w > 0 {
		if p == 0 {
			return 0
		}
		w = min(256, max(1, (w*p+50)/100))
	}
	if ss := time.Duration(e.slowstart.Load()); ss > 0 && w > 0 {
		if since := e.upSince.Load(); since != 0 {
			elapsed := time.Duration(c.Now().UnixNano() - since)
			if elapsed >= ss {
				e.upSince.CompareAndSwap(since, 0) // ramp over: skip the clock next time
			}
			w = SlowstartWeight(w, elapsed, ss)
		}
	}
	return w
}

// Snapshot returns every server's status, in config order.
func (m *Monitor) Snapshot() []ServerStatus {
	idx := m.idx.Load()
	now := m.clock.Now()
	out := make([]ServerStatus, 0, len(idx.order))
	for _, e := range idx.order {
		out = append(out, m.status(e, now))
	}
	return out
}

// Status returns one server's status.
func (m *Monitor) Status(backend, server string) (ServerStatus, bool) {
	e := m.lookup(backend, server)
	if e == nil {
		return ServerStatus{}, false
	}
	return m.status(e, m.clock.Now()), true
}

func (m *Monitor) status(e *entry, now time.Time) ServerStatus {
	st := ServerStatus{
		Backend: e.backend, Server: e.name, Address: e.addr, Backup: e.backup.Load(),
		State: e.state(), LocalUp: e.localUp.Load(), Checked: e.checked,
		Weight: e.effectiveWeight(m.clock), ConfiguredWeight: int(e.weight.Load()),
		WeightOverride: int(e.weightOverride.Load()), Admin: Admin(e.admin.Load()),
		AgentAdmin: Admin(e.agentAdmin.Load()), AgentWeight: int(e.agentPct.Load()),
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.checked {
		st.CheckType = string(e.hc.Type)
	}
	st.Health, st.Rise, st.Fall = e.tracker.Health(), e.tracker.Rise(), e.tracker.Fall()
	st.Last, st.LastCheck = e.last, e.lastCheck
	if e.lastAgent != nil {
		r := *e.lastAgent
		st.LastAgent = &r
	}
	st.LastChange, st.SinceChange = e.lastChange, now.Sub(e.lastChange)
	st.ChkFail, st.ChkDown = e.chkFail, e.chkDown
	st.PassiveErrors = e.passive.Count(now)
	return st
}
