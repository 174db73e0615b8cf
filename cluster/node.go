package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/state"
	"github.com/fulcrum-lb/fulcrum/vip"
)

// ErrNoQuorum is returned for a write while no leader can be reached.
var ErrNoQuorum = errors.New("no quorum")

// record is what makes a node a cluster member. It lives in the data dir
// (not in /etc, which systemd keeps read-only) and survives restarts.
type record struct {
	Cluster  string    `json:"cluster"`
	NodeID   string    `json:"node_id"`
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Secret   []byte    `json:"secret"`
	Seeds    []string  `json:"seeds"` // gossip addresses to rejoin through
	JoinedAt time.Time `json:"joined_at"`
}

func clusterDir(dataDir string) string { return filepath.Join(dataDir, "cluster") }
func recordPath(dataDir string) string { return filepath.Join(clusterDir(dataDir), "cluster.json") }
func tlsDir(dataDir string) string     { return filepath.Join(clusterDir(dataDir), "tls") }
func raftDir(dataDir string) string    { return filepath.Join(clusterDir(dataDir), "raft") }

// loadRecord returns the node's cluster record, or ok == false when the
// node is standalone.
func loadRecord(dataDir string) (record, bool, error) {
	b, err := os.ReadFile(recordPath(dataDir))
	if errors.Is(err, os.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, false, fmt.Errorf("%s: %w", recordPath(dataDir), err)
	}
	return r, true, nil
}

func saveRecord(dataDir string, r record) error {
	if err := os.MkdirAll(clusterDir(dataDir), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := recordPath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, recordPath(dataDir))
}

// nodeID returns the node's stable ID, generated once and kept in the
// data dir.
func nodeID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "node-id")
	if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
		return string(b), nil
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return "", err
	}
	id := fmt.Sprintf("%x", pki.NewNonce()[:16])
	if err := os.WriteFile(p, []byte(id), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// tlsBundle is the node's cluster identity: the CA (with its key, so any
// voter can admit new nodes) and the node's own certificate.
type tlsBundle struct {
	ca   *pki.CA
	pool *x509.CertPool
	cert tls.Certificate
}

func loadBundle(dir string) (*tlsBundle, error) {
	ca, err := pki.LoadCA(dir)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, "node.crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "node.key"))
	if err != nil {
		return nil, err
	}
	cert, err := pki.KeyPair(certPEM, keyPEM, ca.CertPEM())
	if err != nil {
		return nil, err
	}
	return &tlsBundle{ca: ca, pool: ca.Pool(), cert: cert}, nil
}

func saveNodeCert(dir string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "node.crt"), certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "node.key"), keyPEM, 0o600)
}

// Node is this agent's membership of a cluster: Raft with the replicated
// Store, gossip, and the node API that peers and joiners talk to.
type Node struct {
	cfg     NodeConfig
	log     *slog.Logger
	version string
	rec     record
	tls     *tlsBundle
	store   *state.Store
	raft    *raftNode
	gossip  *gossip
	api     *nodeAPI
	opts    nodeOptions

	metaMu    sync.Mutex
	meta      NodeMeta
	metaDirty chan struct{}

	// barrierOK: this node leads and its state is current (Barrier done).
	barrierOK atomic.Bool
	// onChange, if set, is called (without blocking) on leadership,
	// membership and peer metadata changes: the VIP control's wake-up.
	onChange atomic.Pointer[func(membership bool)]

	stop chan struct{}
	wg   sync.WaitGroup
}

// nodeOptions are the knobs tests turn.
type nodeOptions struct {
	Timers       Timers
	GossipTimers GossipTimers
	// Admin, when set, serves the admin API to remote CLIs holding an
	// operator certificate, on the node API port.
	Admin http.Handler
	// VIPAnnouncer, when set, replaces the system's announcer (ARP on the
	// interface, BGP on a dummy device): in-process tests hold their VIPs
	// in memory and touch neither an interface nor netlink.
	VIPAnnouncer func(spec state.VIP) (vip.Announcer, error)
}

func defaultNodeOptions() nodeOptions {
	return nodeOptions{Timers: DefaultTimers(), GossipTimers: DefaultGossipTimers()}
}

// revoked reports whether a certificate serial is on the cluster's deny list.
func (n *Node) revoked(serial string) bool { return n.store.Revoked(serial) }

// start opens Raft (bootstrapping a new cluster when bootstrap is set and
// there is no state), gossip and the node API.
func (n *Node) start(bootstrap bool, o nodeOptions) error {
	n.opts = o
	c := n.cfg.Cluster
	raftServer := pki.RequireRole(pki.ServerTLS(n.tls.pool, n.tls.cert, n.revoked), pki.RoleNode)
	raftClient := pki.ClientTLS(n.tls.pool, n.tls.cert, "", n.revoked)
	advertise, err := net.ResolveTCPAddr("tcp", c.RaftAddr())
	if err != nil {
		return err
	}
	stream, err := newTLSStream(c.RaftAddr(), advertise, raftServer, raftClient)
	if err != nil {
		return err
	}
	n.raft, err = openRaft(raftOptions{
		Dir: raftDir(n.cfg.Node.DataDir), ID: n.rec.NodeID, Stream: stream,
		Store: n.store, Timers: o.Timers, Log: n.log, Bootstrap: bootstrap,
	})
	if err != nil {
		stream.Close()
		return err
	}
	n.meta = NodeMeta{ID: n.rec.NodeID, RaftAddr: c.RaftAddr(), APIAddr: c.APIAddr(), Version: n.version,
		Role: n.rec.Role, Schema: state.SchemaLevel(), VIPPriority: n.cfg.VIP.Priority}
	n.gossip, err = startGossip(gossipOptions{
		Name: n.rec.Name, Bind: c.GossipAddr(), Key: pki.GossipKey(n.rec.Secret),
		Timers: o.GossipTimers, Meta: n.meta, Log: n.log,
	})
	if err != nil {
		n.raft.close()
		return err
	}
	n.api, err = startNodeAPI(n)
	if err != nil {
		n.gossip.leave(time.Second)
		n.raft.close()
		return err
	}
	if err := n.gossip.join(slices.DeleteFunc(slices.Clone(n.rec.Seeds), func(s string) bool { return s == c.GossipAddr() })); err != nil {
		n.log.Warn("gossip join failed; will be found by peers", "seeds", n.rec.Seeds, "err", err)
	}
	n.stop = make(chan struct{})
	n.wg.Add(3)
	go n.leaderLoop()
	go n.mendGossip()
	go n.metaPublisher()
	return nil
}

// mendGossip rejoins gossip through every known node that gossip does
// not show alive: after a restart (seeds may all be stale) and after a
// partition long enough for the peers to declare this node dead.
func (n *Node) mendGossip() {
	defer n.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		alive := map[string]bool{}
		for _, m := range n.gossip.members() {
			if m.State == "alive" {
				alive[m.Name] = true
			}
		}
		var peers []string
		for _, nd := range n.store.Nodes() {
			if nd.Name != n.rec.Name && !alive[nd.Name] && nd.GossipAddr != "" {
				peers = append(peers, nd.GossipAddr)
			}
		}
		if len(peers) > 0 {
			n.gossip.join(peers) // best effort: the peer may be down
		}
	}
}

func (n *Node) setOnChange(f func(membership bool)) {
	if f == nil {
		n.onChange.Store(nil)
		return
	}
	n.onChange.Store(&f)
}

// changed calls onChange; membership says whether leadership or the
// membership (a node joining, leaving, dying) moved, rather than only a
// peer's metadata.
func (n *Node) changed(membership bool) {
	if f := n.onChange.Load(); f != nil {
		(*f)(membership)
	}
}

// gossipChanged is changed for a gossip wake-up.
func (n *Node) gossipChanged() { n.changed(n.gossip.takeMembershipMoved()) }

// setHoldsVIP publishes whether this node holds the VIP, so that peers
// can tell when the holder dies (the tiebreaker rule), and for `cluster
// status` since when and when it last announced it (zero times: unknown).
func (n *Node) setHoldsVIP(hold bool, since, announced time.Time) {
	var s, a int64
	if hold {
		s, a = unixMilli(since), unixMilli(announced)
	}
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if n.meta.HoldsVIP == hold && n.meta.VIPSince == s && n.meta.Announced == a {
		return
	}
	n.meta.HoldsVIP, n.meta.VIPSince, n.meta.Announced = hold, s, a
	n.publishMeta()
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// setFit publishes whether this node can take the VIP (see Agent.fit).
// HealthySince is set when it becomes fit and cleared when it is not, so
// that a leader lets a returning preferred node take over only once it has
// been fit for preempt_delay. It never waits on the network: the VIP
// reconcile pass calls it.
func (n *Node) setFit(fit bool, now time.Time) {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if n.meta.Fit == fit {
		return
	}
	n.meta.Fit = fit
	n.meta.HealthySince = 0
	if fit {
		n.meta.HealthySince = now.UnixNano()
	}
	n.publishMeta()
}

// ownMeta returns a copy of the metadata this node publishes.
func (n *Node) ownMeta() NodeMeta {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	return n.meta
}

// publishMeta hands the metadata to the publisher goroutine: callers (the
// VIP reconcile pass among them) never wait on the network.
func (n *Node) publishMeta() {
	select {
	case n.metaDirty <- struct{}{}:
	default:
	}
}

// metaPublisher gossips the latest metadata; a burst of changes is one
// update.
func (n *Node) metaPublisher() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.metaDirty:
		}
		n.metaMu.Lock()
		m := n.meta
		n.metaMu.Unlock()
		// memberlist refuses metadata over 512 bytes: a long apply error
		// must not cost the peers this node's identity and fitness.
		if len(m.ApplyError) > maxMetaApplyError {
			m.ApplyError = truncateUTF8(m.ApplyError, maxMetaApplyError-len("…")) + "…"
		}
		if err := n.gossip.updateMeta(m); err != nil {
			n.log.Warn("gossip metadata update", "err", err)
		}
	}
}

// maxMetaApplyError bounds the apply error gossiped (the full text stays
// in this node's log).
const maxMetaApplyError = 200

// truncateUTF8 cuts s to at most max bytes, on a rune boundary.
func truncateUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}

// holderDead reports whether gossip declared dead a node that held the VIP.
func (n *Node) holderDead() bool {
	for _, m := range n.gossip.members() {
		if m.Name != n.rec.Name && m.Meta.HoldsVIP && (m.State == "dead" || m.State == "left") {
			return true
		}
	}
	return false
}

// applyErr is why this node cannot run the committed config ("" if it can).
func (n *Node) applyErr() string {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	return n.meta.ApplyError
}

// close stops the node without leaving the cluster: a restart keeps the
// Raft membership. It hands leadership over first and leaves gossip
// gracefully so peers notice at once.
func (n *Node) close() error {
	if n.raft.raft.State() == raft.Leader && n.voters() > 1 {
		if err := n.raft.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("leadership transfer at stop", "err", err)
		}
	}
	close(n.stop)
	n.wg.Wait()
	var errs []error
	errs = append(errs, n.gossip.leave(2*time.Second))
	errs = append(errs, n.api.close())
	errs = append(errs, n.raft.close())
	return errors.Join(errs...)
}

func (n *Node) voters() int {
	f := n.raft.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	k := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			k++
		}
	}
	return k
}

// isLeader reports whether this node leads.
func (n *Node) isLeader() bool { return n.raft.raft.State() == raft.Leader }

// leaderAPI returns the node API address of the current leader.
func (n *Node) leaderAPI() (string, error) {
	_, id := n.raft.raft.LeaderWithID()
	if id == "" {
		return "", ErrNoQuorum
	}
	for _, nd := range n.store.Nodes() {
		if nd.ID == string(id) {
			return nd.APIAddr, nil
		}
	}
	for _, m := range n.gossip.members() {
		if m.Meta.ID == string(id) {
			return m.Meta.APIAddr, nil
		}
	}
	return "", fmt.Errorf("leader %s has no known API address", id)
}

// propose commits a command through the leader (this node, or forwarded)
// and returns its result. A domain refusal is a *state.CommandError.
func (n *Node) propose(ctx context.Context, c state.Command) (state.Result, error) {
	data, err := state.Encode(c)
	if err != nil {
		return state.Result{}, err
	}
	if n.isLeader() {
		return n.applyLocal(data, 5*time.Second)
	}
	addr, err := n.leaderAPI()
	if err != nil {
		return state.Result{}, n.noQuorum(err)
	}
	var res state.Result
	if err := n.api.call(ctx, addr, "/v1/internal/apply", data, &res); err != nil {
		return state.Result{}, fmt.Errorf("forward to the leader (%s): %w", addr, err)
	}
	return res, res.Err()
}

func (n *Node) applyLocal(data []byte, timeout time.Duration) (state.Result, error) {
	f := n.raft.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return state.Result{}, n.noQuorum(err)
		}
		return state.Result{}, err
	}
	res, _ := f.Response().(state.Result)
	return res, res.Err()
}

// noQuorum explains a failed write in the operator's terms.
func (n *Node) noQuorum(cause error) error {
	alive, total := 0, 0
	members := map[string]bool{}
	for _, m := range n.gossip.members() {
		members[m.Meta.ID] = m.State == "alive"
	}
	f := n.raft.raft.GetConfiguration()
	if f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage != raft.Voter {
				continue
			}
			total++
			if members[string(s.ID)] {
				alive++
			}
		}
	}
	return fmt.Errorf("%w: %d of %d voters reachable; the config is read-only until a majority is back (%v)",
		ErrNoQuorum, alive, total, cause)
}

// leaderLoop runs the leader's duties while this node leads: it keeps the
// committed health verdicts in line with the nodes' views and the live
// members. One loop at a time, woken by leadership changes, gossip events
// and commits.
func (n *Node) leaderLoop() {
	defer n.wg.Done()
	leading := n.isLeader()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		watch := n.store.Watch()
		if leading {
			if err := n.raft.raft.Barrier(2 * time.Second).Error(); err != nil {
				n.log.Warn("leader barrier", "err", err)
			} else {
				if !n.barrierOK.Swap(true) {
					n.changed(true)
				}
				n.leaderDuties()
			}
		}
		select {
		case <-n.stop:
			return
		case l := <-n.raft.leaderCh:
			leading = l
			if !l {
				n.barrierOK.Store(false)
			}
			if l {
				n.log.Info("this node is the cluster leader", "node", n.rec.Name)
			}
			n.changed(true)
		case <-n.gossip.wake:
			n.gossipChanged()
		case <-watch:
		case <-tick.C:
		}
	}
}

// leaderDuties registers live members that the store does not know yet
// and commits verdict changes.
func (n *Node) leaderDuties() {
	view := n.store.View()
	policy := state.PolicyMajority
	if cv, ok := view.Current(); ok && cv.Config != nil && cv.Config.Global.HealthVerdict != "" {
		policy = cv.Config.Global.HealthVerdict
	}
	live := n.liveVoterNames()
	changes := view.VerdictChanges(live, policy)
	if len(changes) == 0 {
		return
	}
	cmd := &state.SetVerdicts{Verdicts: changes, Term: n.term(), LiveVoters: live, Policy: policy}
	if _, err := n.propose(context.Background(), cmd); err != nil {
		n.log.Warn("commit verdicts", "err", err)
	}
}

func (n *Node) term() uint64 {
	var t uint64
	fmt.Sscan(n.raft.raft.Stats()["term"], &t)
	return t
}

// liveVoterNames lists the names of the voters that gossip sees alive.
func (n *Node) liveVoterNames() []string {
	alive := map[string]bool{}
	for _, m := range n.gossip.members() {
		if m.State == "alive" {
			alive[m.Meta.ID] = true
		}
	}
	var out []string
	f := n.raft.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	byID := map[string]string{}
	for _, nd := range n.store.Nodes() {
		byID[nd.ID] = nd.Name
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && alive[string(s.ID)] && byID[string(s.ID)] != "" {
			out = append(out, byID[string(s.ID)])
		}
	}
	slices.Sort(out)
	return out
}

// setApplied publishes the config version this node's data plane runs.
func (n *Node) setApplied(version uint64, applyErr string) {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if n.meta.Applied == version && n.meta.ApplyError == applyErr {
		return
	}
	n.meta.Applied, n.meta.ApplyError = version, applyErr
	n.publishMeta()
}
