package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/health"
	"github.com/fulcrum-lb/fulcrum/state"
)

// ErrStandalone refuses cluster-only commands on a standalone node.
var ErrStandalone = errors.New("this node is standalone: run `fulcrum cluster init` (or `fulcrum cluster join`) first")

// membership is the agent's side of its cluster: the node, the replicated
// store, and the goroutines that make the data plane follow the store.
type membership struct {
	node    *Node
	store   *state.Store
	applied uint64 // guarded by Agent.mu
	// replayTo is the end of the local Raft log when the node attached:
	// until the store has applied that far it is replaying history, and
	// a version older than the one the node runs is not gone back to.
	replayTo uint64
	views    chan struct{}
	pending  sync.Map // "backend/server" -> bool: transitions to report
	stop     chan struct{}
	wg       sync.WaitGroup
}

// appliedPath keeps the last config version this node ran, so that after
// a restart it serves at once, before (or without) a quorum.
func appliedPath(dataDir string) string { return filepath.Join(clusterDir(dataDir), "applied.yaml") }

// attach makes the agent follow the store: configs, runtime server state,
// verdicts; and report this node's health views.
func (a *Agent) attach(n *Node, store *state.Store) {
	m := &membership{node: n, store: store, views: make(chan struct{}, 1), stop: make(chan struct{})}
	if v, _, ok := readApplied(a.cfg.Node.DataDir); ok {
		m.applied = v // the engine already runs it (see loadApplied)
		m.replayTo = n.raft.raft.LastIndex()
		n.setApplied(v, "")
	}
	a.member.Store(m)
	m.wg.Add(2)
	go a.followStore(m)
	go a.reportViews(m)
	m.poke()
}

// detach stops following the store and closes the node (without leaving).
func (a *Agent) detach() error {
	m := a.member.Swap(nil)
	if m == nil {
		return nil
	}
	// Stop following the store (nothing may start VIP control again),
	// drop the VIP, then hand leadership over (in close): the new leader
	// claims it as soon as it leads.
	close(m.stop)
	m.wg.Wait()
	a.stopVIP()
	return m.node.close()
}

func (m *membership) poke() {
	select {
	case m.views <- struct{}{}:
	default:
	}
}

// followStore applies each committed change to this node's data plane.
func (a *Agent) followStore(m *membership) {
	defer m.wg.Done()
	for {
		ch := m.store.Watch()
		a.syncFromStore(m)
		select {
		case <-m.stop:
			return
		case <-ch:
		case <-m.node.gossip.wake:
			// Membership changed: the VIP holder re-announces (the
			// leader loop may have taken this wake-up instead).
			m.node.gossipChanged()
		case <-time.After(2 * time.Second): // verdict fallback when quorum goes
		}
	}
}

func (a *Agent) syncFromStore(m *membership) {
	view := m.store.View()
	if cv, ok := view.Current(); ok {
		a.applyVersion(m, cv)
	}
	mon := a.monitor.Load()
	rc := a.running.Load()
	if mon == nil || rc == nil {
		return
	}
	a.syncVIP(m, rc.Config)
	verdicts := view.Verdicts()
	quorum := m.node.hasLeader()
	for _, b := range rc.Config.Backends {
		for _, s := range b.Servers {
			key := state.ServerKey(b.Name, s.Name)
			st, _ := view.ServerState(b.Name, s.Name)
			a.syncServerState(mon, b.Name, s.Name, st)
			hs, ok := mon.Status(b.Name, s.Name)
			if !ok {
				continue
			}
			if v, committed := verdicts[key]; committed && quorum {
				mon.SetVerdict(b.Name, s.Name, v)
			} else {
				// Never judged, or no quorum: this node's own observation.
				mon.SetVerdict(b.Name, s.Name, hs.LocalUp)
			}
		}
	}
}

func (a *Agent) syncServerState(mon *health.Monitor, backend, server string, st state.ServerState) {
	hs, ok := mon.Status(backend, server)
	if !ok {
		return
	}
	want := health.AdminReady
	switch st.Admin {
	case state.AdminDrain:
		want = health.AdminDrain
	case state.AdminMaint:
		want = health.AdminMaint
	}
	if hs.Admin != want {
		mon.SetAdmin(backend, server, want)
	}
	w := -1
	if st.Weight != nil {
		w = *st.Weight
	}
	if hs.WeightOverride != w {
		mon.SetWeight(backend, server, w)
	}
}

// applyVersion puts a committed config version in service if this node
// does not run it yet. A version that cannot be put in service is
// reported (in gossip, hence in status) and the previous one stays.
func (a *Agent) applyVersion(m *membership, cv state.ConfigVersion) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cv.Version == m.applied || a.phase != phaseRunning {
		return
	}
	if cv.Version < m.applied && m.store.AppliedIndex() < m.replayTo {
		return // the log replay of a restart passing an older version
	}
	if cv.Config == nil {
		m.node.setApplied(m.applied, fmt.Sprintf("version %d does not parse: %s", cv.Version, cv.ParseError))
		return
	}
	if err := a.putInService(cv.Config); err != nil {
		a.log.Error("committed config not applied; the previous one stays", "version", cv.Version, "err", err)
		m.node.setApplied(m.applied, fmt.Sprintf("version %d: %v", cv.Version, err))
		return
	}
	m.applied = cv.Version
	a.running.Store(&RunningConfig{Source: fmt.Sprintf("cluster config version %d", cv.Version), LoadedAt: time.Now(), Config: cv.Config})
	if err := writeFileAtomic(appliedPath(a.cfg.Node.DataDir), []byte(versionHeader(cv.Version)+cv.YAML), 0o600); err != nil {
		a.log.Warn("keep a copy of the applied config", "err", err)
	}
	m.node.setApplied(cv.Version, "")
	a.log.Info("cluster config applied", "version", cv.Version, "origin", cv.Origin)
}

// putInService swaps cfg into the health monitor and the engine; on an
// engine failure the monitor goes back to the running config. A witness
// votes and gossips but runs no proxy: it keeps its data plane empty.
func (a *Agent) putInService(cfg *state.Config) error {
	if a.cfg.Node.Role == "witness" {
		return nil
	}
	mon := a.monitor.Load()
	if err := mon.Update(cfg); err != nil {
		return err
	}
	if err := a.engine.Load().Apply(cfg); err != nil {
		if rc := a.running.Load(); rc != nil {
			mon.Update(rc.Config)
		}
		return err
	}
	return nil
}

func versionHeader(v uint64) string {
	return "# fulcrum cluster config version " + strconv.FormatUint(v, 10) + "\n"
}

// readApplied returns the last applied version kept on disk.
func readApplied(dataDir string) (uint64, []byte, bool) {
	b, err := os.ReadFile(appliedPath(dataDir))
	if err != nil {
		return 0, nil, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	v, err := strconv.ParseUint(strings.TrimPrefix(line, "# fulcrum cluster config version "), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	return v, b, true
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// hasLeader reports whether this node knows a leader.
func (n *Node) hasLeader() bool {
	_, id := n.raft.raft.LeaderWithID()
	return id != ""
}

// clusterObserver hears this node's health transitions: standalone (or
// without quorum) they are the verdict at once; clustered they are also
// reported to the leader, which commits the agreed verdict.
type clusterObserver struct{ a *Agent }

func (o clusterObserver) ServerSeen(backend, server string, up bool, reason string) {
	m := o.a.member.Load()
	if m == nil || !m.node.hasLeader() {
		if mon := o.a.monitor.Load(); mon != nil {
			mon.SetVerdict(backend, server, up)
		}
	}
	if m != nil {
		m.pending.Store(state.ServerKey(backend, server), up)
		m.poke()
	}
}

// reportViews sends this node's health view to the leader: the whole view
// first (after a join, a restart, or a failed report), then the
// transitions.
func (a *Agent) reportViews(m *membership) {
	defer m.wg.Done()
	full := true
	for {
		select {
		case <-m.stop:
			return
		case <-m.views:
		case <-time.After(2 * time.Second):
		}
		if !m.node.hasLeader() {
			full = true
			continue
		}
		servers := map[string]bool{}
		if full {
			if mon := a.monitor.Load(); mon != nil {
				for _, st := range mon.Snapshot() {
					servers[state.ServerKey(st.Backend, st.Server)] = st.LocalUp
				}
			}
		}
		m.pending.Range(func(k, v any) bool {
			servers[k.(string)] = v.(bool)
			m.pending.Delete(k)
			return true
		})
		if len(servers) == 0 {
			continue
		}
		seq := m.store.View().Views()[a.cfg.Node.Name].Seq + 1
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := m.node.propose(ctx, &state.HealthView{Node: a.cfg.Node.Name, Seq: seq, Full: full, Servers: servers})
		cancel()
		if err != nil {
			var ce *state.CommandError
			if !errors.As(err, &ce) {
				a.log.Warn("report health view", "err", err)
			}
			full = true
			continue
		}
		full = false
	}
}

// ClusterStatus is `fulcrum cluster status`: one screen for the cluster.
type ClusterStatus struct {
	Clustered     bool         `json:"clustered"`
	Node          string       `json:"node"`
	Leader        string       `json:"leader"`
	Term          uint64       `json:"term"`
	Quorum        bool         `json:"quorum"`
	Nodes         []NodeStatus `json:"nodes"`
	ConfigVersion uint64       `json:"config_version"`
	// VIPHolders are the nodes announcing the VIP (one in active-passive).
	VIPHolders []string  `json:"vip_holders"`
	VIP        VIPStatus `json:"vip"`
	Warnings   []string  `json:"warnings"`
}

// NodeStatus is one node as the cluster sees it.
type NodeStatus struct {
	Name                 string `json:"name"`
	Address              string `json:"address"`
	Role                 string `json:"role"`
	Gossip               string `json:"gossip"`
	Raft                 string `json:"raft"`
	AppliedConfigVersion uint64 `json:"applied_config_version"`
	ApplyError           string `json:"apply_error,omitempty"`
	Version              string `json:"version"`
	// VIP is set while the node announces the VIP.
	VIP *NodeVIP `json:"vip,omitempty"`
}

// NodeVIP is a VIP holder as gossip shows it.
type NodeVIP struct {
	Since time.Time `json:"since,omitzero"`
	// LastAnnounce is its last GARP burst (active-passive) or BGP
	// advertisement (active-active).
	LastAnnounce time.Time `json:"last_announce,omitzero"`
}

// Status assembles the cluster status from Raft, gossip and the store.
func (a *Agent) ClusterStatus() (ClusterStatus, error) {
	m := a.member.Load()
	if m == nil {
		return ClusterStatus{Clustered: false, Node: a.cfg.Node.Name, Nodes: []NodeStatus{}, Warnings: []string{ErrStandalone.Error()}}, nil
	}
	n := m.node
	st := ClusterStatus{Clustered: true, Node: a.cfg.Node.Name, Term: n.term(), Nodes: []NodeStatus{}, Warnings: []string{}}
	_, leaderID := n.raft.raft.LeaderWithID()
	st.Quorum = leaderID != ""
	view := m.store.View()
	if cv, ok := view.Current(); ok {
		st.ConfigVersion = cv.Version
	}
	gossip := map[string]Member{}
	st.VIPHolders = []string{}
	for _, mem := range n.gossip.members() {
		gossip[mem.Meta.ID] = mem
		if mem.Meta.HoldsVIP && mem.State == "alive" {
			st.VIPHolders = append(st.VIPHolders, mem.Name)
		}
	}
	slices.Sort(st.VIPHolders)
	st.VIP, _ = a.VIPStatus()
	if st.VIP.Mode == state.VIPModeActivePassive && len(st.VIPHolders) > 1 {
		st.Warnings = append(st.Warnings, fmt.Sprintf("VIP announced by %d nodes: %v", len(st.VIPHolders), st.VIPHolders))
	}
	if st.VIP.Mode != state.VIPModeNone && st.VIP.Mode != "" && !st.Quorum {
		st.Warnings = append(st.Warnings, "degraded: without quorum the VIP follows the without_quorum rule")
	}
	suffrage := map[string]raft.ServerSuffrage{}
	voters := 0
	if f := n.raft.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			suffrage[string(s.ID)] = s.Suffrage
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
	}
	for _, nd := range view.Nodes() {
		ns := NodeStatus{Name: nd.Name, Address: nd.RaftAddr, Role: string(nd.Role), Gossip: "dead", Raft: "none", Version: nd.Version}
		if mem, ok := gossip[nd.ID]; ok {
			ns.Gossip = mem.State
			ns.AppliedConfigVersion = mem.Meta.Applied
			ns.ApplyError = mem.Meta.ApplyError
			if mem.Meta.Version != "" {
				ns.Version = mem.Meta.Version
			}
			if mem.Meta.HoldsVIP && mem.State == "alive" {
				ns.VIP = &NodeVIP{Since: fromMilli(mem.Meta.VIPSince), LastAnnounce: fromMilli(mem.Meta.Announced)}
			}
		}
		if sfr, ok := suffrage[nd.ID]; ok {
			ns.Raft = "follower"
			if sfr == raft.Nonvoter {
				ns.Raft = "nonvoter"
			}
			if nd.ID == string(leaderID) {
				ns.Raft, st.Leader = "leader", nd.Name
			}
		}
		if nd.ID == m.node.rec.NodeID {
			ns.Raft = raftState(n.raft.raft.State())
		}
		st.Nodes = append(st.Nodes, ns)
		if ns.ApplyError != "" {
			st.Warnings = append(st.Warnings, fmt.Sprintf("%s cannot apply the config: %s", nd.Name, ns.ApplyError))
		}
		if ns.Gossip != "alive" && nd.ID != m.node.rec.NodeID {
			st.Warnings = append(st.Warnings, fmt.Sprintf("%s is %s (gossip); its applied config version is as last seen", nd.Name, ns.Gossip))
		}
	}
	if !st.Quorum {
		st.Warnings = append(st.Warnings, "no quorum: writes are refused and each node uses its own health observations")
	}
	if voters == 2 {
		st.Warnings = append(st.Warnings, "two voters tolerate no node loss for writes: add a third node or a witness (node.role: witness)")
	}
	if _, err := os.Stat(a.cfg.ProxyConfig); err == nil {
		st.Warnings = append(st.Warnings, fmt.Sprintf("proxy_config (%s) is ignored while clustered; `fulcrum config apply` changes the config", a.cfg.ProxyConfig))
	}
	for _, d := range view.Disagreements(n.liveVoterNames()) {
		st.Warnings = append(st.Warnings, d.String())
	}
	slices.SortFunc(st.Nodes, func(x, y NodeStatus) int { return strings.Compare(x.Name, y.Name) })
	return st, nil
}

func fromMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// loadApplied is a clustered node's start-up config: the last version it
// applied, kept on disk, so it serves before Raft has caught up (or
// without a quorum at all). Before any version: an empty config.
func (a *Agent) loadApplied() (*RunningConfig, error) {
	v, doc, ok := readApplied(a.cfg.Node.DataDir)
	if !ok {
		cfg, _ := state.Parse(nil)
		return &RunningConfig{Source: "cluster (no config applied yet)", LoadedAt: time.Now(), Config: cfg}, nil
	}
	cfg, err := state.Parse(doc)
	if err != nil {
		return nil, fmt.Errorf("last applied cluster config (version %d): %w", v, err)
	}
	return &RunningConfig{Source: fmt.Sprintf("cluster config version %d (as last applied)", v), LoadedAt: time.Now(), Config: cfg}, nil
}

// replicateServerChange commits an operator's server change through Raft,
// so that every node's data plane obeys it, and returns this node's view
// of the server once it has applied the change.
func (a *Agent) replicateServerChange(m *membership, backend, server string, cmd state.Command) (health.ServerStatus, error) {
	mon := a.monitor.Load()
	if mon == nil {
		return health.ServerStatus{}, ErrNotRunning
	}
	if _, ok := mon.Status(backend, server); !ok {
		return health.ServerStatus{}, a.notFound(backend, server)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := m.node.propose(ctx, cmd)
	if err != nil {
		return health.ServerStatus{}, err
	}
	// Wait for this node's follower loop to apply the commit.
	for m.store.AppliedIndex() < res.Index && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	a.syncFromStore(m)
	st, _ := mon.Status(backend, server)
	return st, nil
}

func stateAdmin(a health.Admin) state.Admin {
	switch a {
	case health.AdminDrain:
		return state.AdminDrain
	case health.AdminMaint:
		return state.AdminMaint
	}
	return state.AdminReady
}
