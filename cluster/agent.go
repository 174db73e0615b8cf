package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fulcrum-lb/fulcrum/health"
	"github.com/fulcrum-lb/fulcrum/proxy"
	"github.com/fulcrum-lb/fulcrum/state"
)

// ErrNotRunning is returned by Agent.Reload before Run has loaded the first
// proxy config and once the agent is stopping.
var ErrNotRunning = errors.New("the agent is not running (starting or stopping)")

// RunningConfig is the proxy config the engine runs, where it came from and
// when it was loaded.
type RunningConfig struct {
	Source   string        `json:"source"`
	LoadedAt time.Time     `json:"loaded_at"`
	Config   *state.Config `json:"config"`
}

// ConfigError is a proxy config that could not be loaded: unreadable,
// undecodable (Err), or invalid (Faults, each located by its path).
type ConfigError struct {
	Source string
	Faults state.Errors
	Err    error
}

func (e *ConfigError) Error() string {
	if len(e.Faults) > 0 {
		return fmt.Sprintf("proxy config %s: %d fault(s):\n%s", e.Source, len(e.Faults), indent(e.Faults.Error()))
	}
	return fmt.Sprintf("proxy config %s: %v", e.Source, e.Err)
}

func (e *ConfigError) Unwrap() error {
	if len(e.Faults) > 0 {
		return e.Faults
	}
	return e.Err
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// ApplyError is a valid proxy config that the engine could not put in
// service (a listener that cannot bind, for one). The running config stays.
type ApplyError struct {
	Source string
	Err    error
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("apply proxy config %s: %v", e.Source, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// Health is the answer of the admin API's health endpoint.
type Health struct {
	Status  string `json:"status"`
	Node    string `json:"node"`
	Version string `json:"version"`
}

// AgentOption configures an Agent.
type AgentOption func(*Agent)

// WithVersion sets the version the agent reports (the binary's).
func WithVersion(v string) AgentOption { return func(a *Agent) { a.version = v } }

// WithNotifier replaces the sd_notify client, which by default writes to
// $NOTIFY_SOCKET.
func WithNotifier(n *Notifier) AgentOption { return func(a *Agent) { a.notify = n } }

type phase int

const (
	phaseNew phase = iota
	phaseRunning
	phaseStopping
)

// Agent is the daemon of a standalone node: it runs the proxy engine on the
// proxy config file, reloads it on request, serves the admin API and tells
// systemd where it stands.
type Agent struct {
	cfg     NodeConfig
	log     *slog.Logger
	version string
	notify  *Notifier

	// engine is created by Run (it owns goroutines) and set before the
	// admin API starts.
	engine atomic.Pointer[proxy.Engine]
	// monitor checks the servers; created by Run with the engine.
	monitor atomic.Pointer[health.Monitor]
	// member is the node's cluster membership, nil while standalone.
	member atomic.Pointer[membership]
	// opMu serialises cluster init, join and leave.
	opMu     sync.Mutex
	nodeOpts nodeOptions
	// draining: fulcrum node drain; the node gives up the VIP.
	draining atomic.Bool
	// handingOver: a drain or a stop is moving the VIP away.
	handingOver atomic.Bool
	vipMu       sync.Mutex
	vip         *vipControl // nil: no VIP on this node

	// mu serialises the loads of the proxy config and guards phase.
	mu      sync.Mutex
	phase   phase
	running atomic.Pointer[RunningConfig]
}

// NewAgent returns an agent for the node config cfg. It opens nothing:
// Run does.
func NewAgent(cfg NodeConfig, log *slog.Logger, opts ...AgentOption) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	if log == nil {
		return nil, errors.New("NewAgent: nil logger")
	}
	a := &Agent{cfg: cfg, log: log, version: "dev", nodeOpts: defaultNodeOptions()}
	for _, o := range opts {
		o(a)
	}
	if a.notify == nil {
		a.notify = NotifierFromEnv(log)
	}
	return a, nil
}

// Run loads the proxy config (a missing or empty file is an empty config:
// the node serves nothing), puts it in service, serves the admin API and
// sends READY=1. It returns when ctx is done, after STOPPING=1 and a
// graceful shutdown of the engine bounded by global.hard_stop_after, with
// the admin socket removed; or at once with an error if it cannot start.
// Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.phase != phaseNew {
		a.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	a.phase = phaseStopping // until started: Reload is refused
	rec, clustered, err := loadRecord(a.cfg.Node.DataDir)
	if err != nil {
		a.mu.Unlock()
		return fmt.Errorf("cluster state: %w", err)
	}
	var rc *RunningConfig
	if clustered {
		rc, err = a.loadApplied()
	} else {
		rc, err = a.load(true)
	}
	if err != nil {
		a.mu.Unlock()
		return err
	}
	engine := proxy.New(a.log.With("component", "proxy"))
	a.engine.Store(engine)
	mon, err := health.New(rc.Config, health.Options{
		Logger:   a.log.With("component", "health"),
		Observer: clusterObserver{a},
		// on_marked_down: shutdown-sessions (a no-op for other servers).
		OnVerdict: func(backend, server string, up bool) {
			if !up {
				engine.ShutdownSessions(backend, server)
			}
		},
	})
	if err != nil {
		a.mu.Unlock()
		a.shutdownEngine(ctx, rc)
		return &ApplyError{Source: rc.Source, Err: err}
	}
	a.monitor.Store(mon)
	engine.SetHealth(mon)
	if err := engine.Apply(rc.Config); err != nil {
		a.mu.Unlock()
		a.shutdownEngine(ctx, rc)
		return &ApplyError{Source: rc.Source, Err: err}
	}
	if err := mon.Start(context.WithoutCancel(ctx)); err != nil {
		a.mu.Unlock()
		a.shutdownEngine(ctx, rc)
		return fmt.Errorf("health checks: %w", err)
	}
	a.running.Store(rc)
	admin, err := listenAdmin(a, a.cfg.Admin.Socket)
	if err != nil {
		a.mu.Unlock()
		a.shutdownEngine(ctx, rc)
		return fmt.Errorf("admin API: %w", err)
	}
	a.phase = phaseRunning
	a.mu.Unlock()
	if clustered {
		// The data plane already serves the last applied version; Raft
		// and gossip catch up behind it.
		store := state.NewStore()
		n, err := openExisting(a.cfg, a.log.With("component", "cluster"), a.version, rec, store, a.nodeOpts)
		if err != nil {
			a.mu.Lock()
			a.phase = phaseStopping
			a.mu.Unlock()
			a.shutdownEngine(ctx, a.running.Load())
			admin.close(ctx)
			os.Remove(a.cfg.Admin.Socket)
			return fmt.Errorf("rejoin the cluster: %w", err)
		}
		a.attach(n, store)
	}

	served := make(chan error, 1)
	go func() { served <- admin.serve() }()
	a.log.Info("agent ready", "node", a.cfg.Node.Name, "version", a.version,
		"proxy_config", rc.Source, "frontends", len(rc.Config.Frontends),
		"backends", len(rc.Config.Backends), "admin_socket", a.cfg.Admin.Socket)
	a.notify.Notify(NotifyReady)

	var runErr error
	select {
	case <-ctx.Done():
		a.log.Info("agent stopping")
	case err := <-served:
		runErr = fmt.Errorf("admin API stopped: %w", err)
		served = nil
		a.log.Error("agent stopping", "err", runErr)
	}

	a.mu.Lock() // waits for a reload in progress
	a.phase = phaseStopping
	a.mu.Unlock()
	a.notify.Notify(NotifyStopping)
	// Stopping is not leaving: hand leadership (and the VIP) over after
	// the requests in flight, leave gossip so peers know at once, keep the
	// Raft membership; then drain the rest.
	hctx, hcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if err := a.handOver(hctx); err != nil {
		a.log.Warn("hand over at stop", "err", err)
	}
	hcancel()
	if err := a.detach(); err != nil {
		a.log.Warn("cluster stop", "err", err)
	}
	a.shutdownEngine(ctx, a.running.Load())
	if err := admin.close(ctx); err != nil {
		a.log.Warn("admin API close", "err", err)
	}
	if served != nil {
		<-served
	}
	if err := os.Remove(a.cfg.Admin.Socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("remove admin socket", "err", err)
	}
	a.log.Info("agent stopped")
	return runErr
}

// shutdownEngine stops the engine, waiting for in-flight requests at most
// the running config's hard_stop_after.
func (a *Agent) shutdownEngine(ctx context.Context, rc *RunningConfig) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rc.Config.Global.HardStopAfter.D())
	defer cancel()
	if err := a.engine.Load().Shutdown(sctx); err != nil {
		a.log.Warn("proxy shutdown", "err", err)
	}
	if m := a.monitor.Load(); m != nil {
		if err := m.Close(); err != nil {
			a.log.Warn("health monitor close", "err", err)
		}
	}
}

// Reload re-reads the proxy config file and, if it is valid, swaps it in;
// an invalid file is refused (each fault logged, and returned as a
// *ConfigError) and the running config stays. systemd hears RELOADING=1
// before and READY=1 after. Reloads are serialised; this is what SIGHUP and
// the admin API's POST /v1/reload do.
func (a *Agent) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.phase != phaseRunning {
		return ErrNotRunning
	}
	a.notify.Reloading()
	defer a.notify.Notify(NotifyReady)
	if a.member.Load() != nil {
		// Clustered: the proxy config comes from the cluster; SIGHUP
		// re-reads the node config only.
		return a.reloadNodeConfig()
	}

	rc, err := a.load(false)
	if err != nil {
		return err
	}
	// Health first: the engine reads verdicts of the new servers as soon
	// as it runs the new config.
	mon := a.monitor.Load()
	if err := mon.Update(rc.Config); err != nil {
		err = &ApplyError{Source: rc.Source, Err: err}
		a.log.Error("reload refused, running config kept", "err", err)
		return err
	}
	if err := a.engine.Load().Apply(rc.Config); err != nil {
		if uerr := mon.Update(a.running.Load().Config); uerr != nil {
			a.log.Error("health checks not restored", "err", uerr)
		}
		err = &ApplyError{Source: rc.Source, Err: err}
		a.log.Error("reload refused, running config kept", "err", err)
		return err
	}
	a.running.Store(rc)
	a.log.Info("proxy config reloaded", "proxy_config", rc.Source,
		"frontends", len(rc.Config.Frontends), "backends", len(rc.Config.Backends))
	return nil
}

// load reads and parses the proxy config file. At start-up a missing file
// is an empty config; on reload it is refused, since a file that vanished
// mid-edit must not take every frontend down.
func (a *Agent) load(startup bool) (*RunningConfig, error) {
	src := a.cfg.ProxyConfig
	data, err := os.ReadFile(src)
	switch {
	case startup && errors.Is(err, fs.ErrNotExist):
		a.log.Warn("proxy config file missing; serving nothing", "proxy_config", src)
		data = nil
	case err != nil:
		return nil, a.refuse(&ConfigError{Source: src, Err: err}, startup)
	}
	cfg, err := state.Parse(data)
	if err != nil {
		ce := &ConfigError{Source: src, Err: err}
		if es, ok := errors.AsType[state.Errors](err); ok {
			ce = &ConfigError{Source: src, Faults: es}
		}
		return nil, a.refuse(ce, startup)
	}
	return &RunningConfig{Source: src, LoadedAt: time.Now(), Config: cfg}, nil
}

// refuse logs a config that cannot be loaded, one line per fault.
func (a *Agent) refuse(e *ConfigError, startup bool) error {
	msg := "reload refused, running config kept"
	if startup {
		msg = "proxy config refused"
	}
	for _, f := range e.Faults {
		a.log.Error("proxy config fault", "proxy_config", e.Source, "path", f.Path, "fault", f.Msg)
	}
	if len(e.Faults) == 0 {
		a.log.Error(msg, "proxy_config", e.Source, "err", e.Err)
	} else {
		a.log.Error(msg, "proxy_config", e.Source, "faults", len(e.Faults))
	}
	return e
}

// RunningConfig returns the proxy config in service, or nil before Run
// has loaded one.
func (a *Agent) RunningConfig() *RunningConfig { return a.running.Load() }

// Stats returns the engine's counters with each server's health (none
// before Run).
func (a *Agent) Stats() proxy.Stats {
	e := a.engine.Load()
	if e == nil {
		return proxy.Stats{Frontends: []proxy.FrontendStats{}, Backends: []proxy.BackendStats{}}
	}
	st := e.Stats()
	if m := a.monitor.Load(); m != nil {
		addHealth(&st, m)
	}
	return st
}

// addHealth fills in each server's state and last check from the monitor.
func addHealth(st *proxy.Stats, m *health.Monitor) {
	for i := range st.Backends {
		b := &st.Backends[i]
		for j := range b.Servers {
			s := &b.Servers[j]
			hs, ok := m.Status(b.Name, s.Name)
			if !ok {
				continue
			}
			s.Status = hs.State.String()
			s.Weight = hs.Weight
			s.LastChangeSec = int64(hs.SinceChange.Seconds())
			s.ChkFail, s.ChkDown = hs.ChkFail, hs.ChkDown
			if hs.Checked && !hs.LastCheck.IsZero() {
				s.CheckStatus = string(hs.Last.Status)
				s.CheckCode = hs.Last.Code
				s.CheckDurationMs = hs.Last.Duration.Milliseconds()
				s.CheckDesc = hs.Last.Reason
			}
		}
	}
}

// Health reports the agent's liveness.
func (a *Agent) Health() Health {
	return Health{Status: "ok", Node: a.cfg.Node.Name, Version: a.version}
}

// NodeConfig returns the node config the agent runs with.
func (a *Agent) NodeConfig() NodeConfig { return a.cfg }

// ServerNotFoundError is an operator's command on a server the running
// config does not have.
type ServerNotFoundError struct {
	Backend, Server string
	// NoBackend is set when the backend itself is unknown.
	NoBackend bool
}

func (e *ServerNotFoundError) Error() string {
	if e.NoBackend {
		return fmt.Sprintf("no backend %q in the running config", e.Backend)
	}
	return fmt.Sprintf("no server %q in backend %q", e.Server, e.Backend)
}

// Servers returns every server's health, in config order.
func (a *Agent) Servers() ([]health.ServerStatus, error) {
	m := a.monitor.Load()
	if m == nil {
		return nil, ErrNotRunning
	}
	return m.Snapshot(), nil
}

// Server returns one server's health.
func (a *Agent) Server(backend, server string) (health.ServerStatus, error) {
	m := a.monitor.Load()
	if m == nil {
		return health.ServerStatus{}, ErrNotRunning
	}
	st, ok := m.Status(backend, server)
	if !ok {
		return health.ServerStatus{}, a.notFound(backend, server)
	}
	return st, nil
}

// SetServerAdmin sets the operator's admin state of a server (fulcrum
// server enable|disable|drain) and returns its health afterwards.
func (a *Agent) SetServerAdmin(backend, server string, admin health.Admin) (health.ServerStatus, error) {
	if m := a.member.Load(); m != nil {
		return a.replicateServerChange(m, backend, server, &state.SetServerAdmin{Backend: backend, Server: server, Admin: stateAdmin(admin)})
	}
	return a.changeServer(backend, server, func(m *health.Monitor) error {
		return m.SetAdmin(backend, server, admin)
	})
}

// SetServerWeight sets the operator's runtime weight of a server, 0 to
// 256, or drops it with -1 (fulcrum server weight), and returns its
// health afterwards.
func (a *Agent) SetServerWeight(backend, server string, weight int) (health.ServerStatus, error) {
	if m := a.member.Load(); m != nil {
		cmd := &state.SetServerWeight{Backend: backend, Server: server}
		if weight >= 0 {
			cmd.Weight = &weight
		}
		return a.replicateServerChange(m, backend, server, cmd)
	}
	return a.changeServer(backend, server, func(m *health.Monitor) error {
		return m.SetWeight(backend, server, weight)
	})
}

// changeServer applies an operator's change under the load lock, so that
// a reload in progress cannot lose it: the monitor carries the admin
// state and weight over to the new servers as it builds them.
func (a *Agent) changeServer(backend, server string, change func(*health.Monitor) error) (health.ServerStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.monitor.Load()
	if a.phase != phaseRunning || m == nil {
		return health.ServerStatus{}, ErrNotRunning
	}
	if _, ok := m.Status(backend, server); !ok {
		return health.ServerStatus{}, a.notFound(backend, server)
	}
	if err := change(m); err != nil {
		return health.ServerStatus{}, err
	}
	st, _ := m.Status(backend, server)
	return st, nil
}

// notFound says whether the backend or only the server is unknown.
func (a *Agent) notFound(backend, server string) error {
	e := &ServerNotFoundError{Backend: backend, Server: server, NoBackend: true}
	if rc := a.running.Load(); rc != nil {
		for _, b := range rc.Config.Backends {
			if b.Name == backend {
				e.NoBackend = false
			}
		}
	}
	return e
}

// reloadNodeConfig re-reads the node config file of a clustered node:
// faults are refused and logged; a valid file's changes are logged, and
// take effect at the next restart (addresses, ports and identity are
// bound at start).
func (a *Agent) reloadNodeConfig() error {
	a.log.Info("clustered: the proxy config comes from the cluster (fulcrum config apply); re-reading the node config only",
		"node_config", a.cfg.File)
	if a.cfg.File == "" {
		return nil
	}
	nc, err := LoadNodeConfig(a.cfg.File, nil)
	if err != nil {
		a.log.Error("node config refused", "node_config", a.cfg.File, "err", err)
		return &ConfigError{Source: a.cfg.File, Err: err}
	}
	nc.File = a.cfg.File
	if nc.Node != a.cfg.Node || nc.Cluster != a.cfg.Cluster || nc.VIP != a.cfg.VIP || nc.Log != a.cfg.Log || nc.Admin != a.cfg.Admin {
		a.log.Warn("node config changed: the change takes effect at the next restart (systemctl restart fulcrum)",
			"node_config", a.cfg.File)
	}
	return nil
}
