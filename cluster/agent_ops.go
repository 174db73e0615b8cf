package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/state"
)

// InitResult is `fulcrum cluster init`'s answer.
type InitResult struct {
	Token       string `json:"token"`
	JoinCommand string `json:"join_command"`
}

// ClusterInit turns this standalone node into the first member of a new
// cluster. Its current proxy config file becomes config version 1, so the
// node never stops serving.
func (a *Agent) ClusterInit(ctx context.Context) (InitResult, error) {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	if a.member.Load() != nil {
		return InitResult{}, errors.New("this node is already in a cluster")
	}
	doc, err := os.ReadFile(a.cfg.ProxyConfig)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return InitResult{}, fmt.Errorf("read proxy config: %w", err)
	}
	store := state.NewStore()
	n, token, err := initCluster(ctx, a.cfg, a.log.With("component", "cluster"), a.version, store, a.nodeOpts)
	if err != nil {
		return InitResult{}, err
	}
	if _, err := n.propose(ctx, &state.ApplyConfig{YAML: string(doc), Origin: a.cfg.Node.Name + " (import)", Time: time.Now().UTC(), Import: true}); err != nil {
		a.log.Error("import of the proxy config as version 1 failed", "err", err)
	}
	a.attach(n, store)
	a.log.Info("cluster initialised", "node", a.cfg.Node.Name)
	join := fmt.Sprintf("fulcrum cluster join %s --token %s",
		net.JoinHostPort(a.cfg.Cluster.BindAddr, strconv.Itoa(a.cfg.Cluster.APIPort)), token)
	return InitResult{Token: token, JoinCommand: join}, nil
}

// ClusterJoin joins a cluster through a member at addr (host[:api_port])
// and adopts the cluster's config; this node's own proxy config file is
// set aside.
func (a *Agent) ClusterJoin(ctx context.Context, addr, token string) error {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	if a.member.Load() != nil {
		return errors.New("this node is already in a cluster")
	}
	store := state.NewStore()
	n, err := joinCluster(ctx, a.cfg, a.log.With("component", "cluster"), a.version, addr, token, store, a.nodeOpts)
	if err != nil {
		return err
	}
	a.attach(n, store)
	a.log.Warn("joined the cluster: this node now runs the cluster's config; its own proxy config file is set aside",
		"proxy_config", a.cfg.ProxyConfig)
	return nil
}

// ClusterLeave takes this node out of the cluster for good; it goes back
// to standalone on its proxy config file.
func (a *Agent) ClusterLeave(ctx context.Context) error {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	if a.member.Load() == nil {
		return ErrStandalone
	}
	a.stopVIP()
	m := a.member.Swap(nil)
	if m == nil {
		return ErrStandalone
	}
	close(m.stop)
	m.wg.Wait()
	if err := m.node.leave(ctx); err != nil {
		return err
	}
	os.Remove(appliedPath(a.cfg.Node.DataDir))
	a.log.Info("left the cluster; standalone again")
	return a.Reload()
}

// ClusterRemove takes another node out of the cluster and revokes its
// certificate.
func (a *Agent) ClusterRemove(ctx context.Context, name string) error {
	m := a.member.Load()
	if m == nil {
		return ErrStandalone
	}
	nd, ok := m.store.View().Node(name)
	if !ok {
		return fmt.Errorf("no node %q in the cluster", name)
	}
	if nd.ID == m.node.rec.NodeID {
		return errors.New("use `fulcrum cluster leave` to take this node out")
	}
	// Revoke first: from this commit on, no handshake with its
	// certificate succeeds anywhere.
	if nd.Serial != "" {
		if _, err := m.node.propose(ctx, &state.RevokeCert{Serial: nd.Serial, Node: name}); err != nil {
			return err
		}
	}
	if _, err := m.node.propose(ctx, &state.NodeRemove{Name: name}); err != nil {
		return err
	}
	if m.node.isLeader() {
		return m.node.raft.raft.RemoveServer(raft.ServerID(nd.ID), 0, 10*time.Second).Error()
	}
	addr, err := m.node.leaderAPI()
	if err != nil {
		return m.node.noQuorum(err)
	}
	return m.node.api.call(ctx, addr, "/v1/internal/remove", mustJSON(removeRequest{ID: nd.ID}), nil)
}

// ClusterFailover hands Raft leadership (and with it an active-passive
// VIP) to another voter, or to the one named.
func (a *Agent) ClusterFailover(ctx context.Context, to string) error {
	m := a.member.Load()
	if m == nil {
		return ErrStandalone
	}
	if !m.node.isLeader() {
		return errors.New("run failover on the leader (see `fulcrum cluster status`)")
	}
	var target *handOverPeer
	if to != "" {
		nd, ok := m.store.View().Node(to)
		if !ok {
			return fmt.Errorf("no node %q in the cluster", to)
		}
		target = &handOverPeer{Candidate: Candidate{Name: nd.Name}, ID: nd.ID, RaftAddr: nd.RaftAddr}
	}
	a.vipMu.Lock()
	c := a.vip
	a.vipMu.Unlock()
	if c == nil {
		if target == nil {
			return m.node.raft.raft.LeadershipTransfer().Error()
		}
		return m.node.raft.raft.LeadershipTransferToServer(raft.ServerID(target.ID), raft.ServerAddress(target.RaftAddr)).Error()
	}
	// With a VIP: the planned-failover sequence (no keep-alive reuse, new
	// connections refused, those open finished, the address dropped, then
	// leadership).
	c.handMu.Lock()
	defer c.handMu.Unlock()
	c.finishing.Store(true)
	c.yielding.Store(true)
	err := a.releaseAndTransfer(ctx, c, target)
	c.yielding.Store(false)
	if e := a.engine.Load(); e != nil && !a.draining.Load() && !a.handingOver.Load() {
		e.Drain(false)
	}
	c.rec.Wake()
	return err
}

// ApplyResult is `fulcrum config apply`'s answer: the committed version
// and the version each node runs.
type ApplyResult struct {
	Version uint64            `json:"version"`
	Message string            `json:"message,omitempty"`
	Applied map[string]uint64 `json:"applied"`
	Pending []string          `json:"pending"`
}

// ApplyConfig validates and commits a new config version, then waits up
// to wait for every live node to run it.
func (a *Agent) ApplyConfig(ctx context.Context, doc string, ifVersion uint64, wait time.Duration) (ApplyResult, error) {
	m := a.member.Load()
	if m == nil {
		return ApplyResult{}, ErrStandalone
	}
	if _, err := state.Parse([]byte(doc)); err != nil {
		return ApplyResult{}, err
	}
	if gap := a.schemaGap(m, []byte(doc)); gap != "" {
		return ApplyResult{}, &state.CommandError{Code: state.CodeConflict, Message: gap}
	}
	res, err := m.node.propose(ctx, &state.ApplyConfig{YAML: doc, Origin: a.cfg.Node.Name, Time: time.Now().UTC(), IfVersion: ifVersion})
	if err != nil {
		return ApplyResult{}, err
	}
	out := a.waitApplied(ctx, m, res.Version, wait)
	out.Message = res.Message
	return out, nil
}

// RollbackConfig commits an earlier version again as a new version.
func (a *Agent) RollbackConfig(ctx context.Context, to, ifVersion uint64, wait time.Duration) (ApplyResult, error) {
	m := a.member.Load()
	if m == nil {
		return ApplyResult{}, ErrStandalone
	}
	res, err := m.node.propose(ctx, &state.RollbackConfig{To: to, Origin: a.cfg.Node.Name, Time: time.Now().UTC(), IfVersion: ifVersion})
	if err != nil {
		return ApplyResult{}, err
	}
	out := a.waitApplied(ctx, m, res.Version, wait)
	out.Message = res.Message
	return out, nil
}

// waitApplied polls gossip until every live node runs version (or wait
// passes) and reports who does.
func (a *Agent) waitApplied(ctx context.Context, m *membership, version uint64, wait time.Duration) ApplyResult {
	deadline := time.Now().Add(wait)
	for {
		out := ApplyResult{Version: version, Applied: map[string]uint64{}, Pending: []string{}}
		for _, mem := range m.node.gossip.members() {
			if mem.State != "alive" {
				continue
			}
			out.Applied[mem.Name] = mem.Meta.Applied
			if mem.Meta.Applied < version {
				out.Pending = append(out.Pending, mem.Name)
			}
		}
		if len(out.Pending) == 0 || time.Now().After(deadline) {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// ConfigHistory lists every committed version (without documents).
func (a *Agent) ConfigHistory() ([]state.ConfigVersion, error) {
	m := a.member.Load()
	if m == nil {
		return nil, ErrStandalone
	}
	h := m.store.History()
	for i := range h {
		h[i].YAML = ""
	}
	return h, nil
}

// ConfigVersion returns one committed version (0: the current one).
func (a *Agent) ConfigVersion(v uint64) (state.ConfigVersion, error) {
	m := a.member.Load()
	if m == nil {
		return state.ConfigVersion{}, ErrStandalone
	}
	if v == 0 {
		cv, ok := m.store.Current()
		if !ok {
			return cv, errors.New("no config committed yet")
		}
		return cv, nil
	}
	cv, ok := m.store.Version(v)
	if !ok {
		return cv, fmt.Errorf("no config version %d", v)
	}
	return cv, nil
}

// ConfigDiff is a line diff between two versions.
func (a *Agent) ConfigDiff(x, y uint64) (string, error) {
	m := a.member.Load()
	if m == nil {
		return "", ErrStandalone
	}
	return m.store.Diff(x, y)
}

// Members lists the gossip members.
func (a *Agent) Members() ([]Member, error) {
	m := a.member.Load()
	if m == nil {
		return nil, ErrStandalone
	}
	return m.node.gossip.members(), nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// schemaGap refuses a config that uses a key the oldest live node's build
// does not know (a rolling upgrade in progress), naming key and nodes.
func (a *Agent) schemaGap(m *membership, doc []byte) string {
	oldest, names := 0, []string{}
	for _, mem := range m.node.gossip.members() {
		if mem.State != "alive" {
			continue
		}
		level := max(mem.Meta.Schema, 1)
		switch {
		case oldest == 0 || level < oldest:
			oldest, names = level, []string{mem.Name}
		case level == oldest:
			names = append(names, mem.Name)
		}
	}
	if oldest == 0 {
		return ""
	}
	return state.SchemaGap(doc, oldest, names)
}
