package state

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ConfigKind says how a config version came to be.
type ConfigKind string

// The config kinds.
const (
	KindApply    ConfigKind = "apply"
	KindRollback ConfigKind = "rollback"
	KindImport   ConfigKind = "import"
)

// ConfigVersion is one committed version of the proxy config.
type ConfigVersion struct {
	// Version numbers versions 1, 2, 3, ... in commit order.
	Version uint64     `json:"version"`
	Kind    ConfigKind `json:"kind"`
	// Time is the proposer's clock when the version was asked for.
	Time   time.Time `json:"time"`
	Origin string    `json:"origin,omitempty"`
	// Source is the version a rollback copied.
	Source uint64 `json:"source,omitempty"`
	// Index is the log index that committed the version.
	Index uint64 `json:"index"`
	// YAML is the document as the operator wrote it (empty in History).
	YAML string `json:"yaml,omitempty"`
	// Config is YAML parsed, with defaults applied. It is shared by every
	// reader and must not be modified. It is nil (and ParseError says why)
	// only for a version restored from a snapshot that this version of the
	// code no longer accepts.
	Config     *Config `json:"-"`
	ParseError string  `json:"parse_error,omitempty"`
}

// ServerState is the replicated runtime state of a server: what the
// operator set with `fulcrum server`. Admin ready without a weight
// override is a server as configured.
type ServerState struct {
	Admin Admin `json:"admin"`
	// Weight overrides the configured weight; nil: as configured.
	Weight *int `json:"weight,omitempty"`
}

func (s ServerState) isDefault() bool { return s.Admin == AdminReady && s.Weight == nil }

func (s ServerState) equal(o ServerState) bool {
	return s.Admin == o.Admin && (s.Weight == nil) == (o.Weight == nil) && (s.Weight == nil || *s.Weight == *o.Weight)
}

// serverState returns a copy of a server's state, Admin set.
func (v *View) serverState(key string) ServerState {
	st, found := v.servers[key]
	if !found {
		return ServerState{Admin: AdminReady}
	}
	if st.Weight != nil {
		st.Weight = ptr(*st.Weight)
	}
	return st
}

// NodeView is the latest health view the store holds for a node.
type NodeView struct {
	// Seq is the sequence number of the latest view applied.
	Seq uint64 `json:"seq"`
	// Index is the log index that applied it.
	Index uint64 `json:"index"`
	// Servers is keyed by ServerKey, true for UP.
	Servers map[string]bool `json:"servers"`
}

// Node is a node's facts.
type Node struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	APIAddr    string `json:"api_addr,omitempty"`
	GossipAddr string `json:"gossip_addr,omitempty"`
	Role       Role   `json:"role"`
	Version    string `json:"version,omitempty"`
	Serial     string `json:"serial,omitempty"`
}

// Revocation is one entry of the certificate deny list.
type Revocation struct {
	Serial string `json:"serial"`
	Node   string `json:"node,omitempty"`
	Index  uint64 `json:"index"`
}

// VerdictBasis records how the latest verdicts were decided.
type VerdictBasis struct {
	Term       uint64        `json:"term,omitempty"`
	LiveVoters []string      `json:"live_voters,omitempty"`
	Policy     VerdictPolicy `json:"policy,omitempty"`
	Index      uint64        `json:"index,omitempty"`
}

// ServerKey names a server across the cluster: "backend/server".
func ServerKey(backend, server string) string { return backend + "/" + server }

// Store is the replicated state machine. Apply, Snapshot and Restore are
// called by Raft, one at a time; every read method is safe for concurrent
// use with them. Readers never block a writer: each change builds a new
// immutable View and swaps it in atomically.
type Store struct {
	mu       sync.Mutex // serializes writers: Apply, Restore, Snapshot
	cur      atomic.Pointer[View]
	applied  atomic.Uint64
	handlers map[CommandType]handler
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{handlers: handlers()}
	s.cur.Store(emptyView())
	return s
}

// View is an immutable, consistent picture of the whole state at one
// moment: the config, runtime server state, verdicts and nodes it returns
// all belong together. Its methods return copies, except the shared,
// read-only *Config of a ConfigVersion.
type View struct {
	versions []*ConfigVersion // versions[i].Version == i+1
	// keys lists the servers of the current config in config order; keySet
	// is the same as a set.
	keys     []string
	keySet   map[string]bool
	servers  map[string]ServerState // only entries that are not the default
	views    map[string]NodeView
	verdicts map[string]bool
	basis    VerdictBasis
	nodes    map[string]Node
	revoked  map[string]Revocation
	// index is the log index of the latest change.
	index   uint64
	changed chan struct{}
}

func emptyView() *View {
	return &View{
		keySet:   map[string]bool{},
		servers:  map[string]ServerState{},
		views:    map[string]NodeView{},
		verdicts: map[string]bool{},
		nodes:    map[string]Node{},
		revoked:  map[string]Revocation{},
		changed:  make(chan struct{}),
	}
}

// next returns a shallow copy of v to build the next view from. Its maps
// are still v's: a change must replace a map, never write into it.
func (v *View) next(index uint64) *View {
	n := *v
	n.index = index
	n.changed = make(chan struct{})
	return &n
}

// View returns the current view.
func (s *Store) View() *View { return s.cur.Load() }

// publish makes v the current view and wakes whoever waits on the old one.
func (s *Store) publish(v *View) {
	old := s.cur.Swap(v)
	close(old.changed)
}

// Watch returns a channel that is closed at the next change of the state.
// Take it before reading, so that no change is missed:
//
//	for {
//		ch := store.Watch()
//		reconcile(store.View())
//		<-ch
//	}
func (s *Store) Watch() <-chan struct{} { return s.View().Changed() }

// AppliedIndex is the log index of the latest entry applied, whether it
// changed the state or was refused.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Current returns the current config version (see View.Current).
func (s *Store) Current() (ConfigVersion, bool) { return s.View().Current() }

// Version returns config version n (see View.Version).
func (s *Store) Version(n uint64) (ConfigVersion, bool) { return s.View().Version(n) }

// History lists every config version (see View.History).
func (s *Store) History() []ConfigVersion { return s.View().History() }

// Diff compares two config versions (see View.Diff).
func (s *Store) Diff(a, b uint64) (string, error) { return s.View().Diff(a, b) }

// ServerState returns a server's runtime state (see View.ServerState).
func (s *Store) ServerState(backend, server string) (ServerState, bool) {
	return s.View().ServerState(backend, server)
}

// Views returns every node's health view (see View.Views).
func (s *Store) Views() map[string]NodeView { return s.View().Views() }

// Verdicts returns the committed verdicts (see View.Verdicts).
func (s *Store) Verdicts() map[string]bool { return s.View().Verdicts() }

// Nodes lists the nodes (see View.Nodes).
func (s *Store) Nodes() []Node { return s.View().Nodes() }

// Revoked reports whether a certificate serial is on the deny list.
func (s *Store) Revoked(serial string) bool { return s.View().Revoked(serial) }

// Changed returns a channel that is closed when this view is replaced by a
// newer one.
func (v *View) Changed() <-chan struct{} { return v.changed }

// Index is the log index of the change that produced this view (0 for an
// empty store).
func (v *View) Index() uint64 { return v.index }

// Current returns the current config version, the latest one; false when
// no config was ever committed.
func (v *View) Current() (ConfigVersion, bool) {
	if len(v.versions) == 0 {
		return ConfigVersion{}, false
	}
	return *v.versions[len(v.versions)-1], true
}

// Version returns config version n.
func (v *View) Version(n uint64) (ConfigVersion, bool) {
	if n == 0 || n > uint64(len(v.versions)) {
		return ConfigVersion{}, false
	}
	return *v.versions[n-1], true
}

// History lists every config version, oldest first, without the documents
// (YAML and Config are empty; use Version for them).
func (v *View) History() []ConfigVersion {
	h := make([]ConfigVersion, len(v.versions))
	for i, cv := range v.versions {
		h[i] = *cv
		h[i].YAML, h[i].Config = "", nil
	}
	return h
}

// Diff returns a unified diff of the documents of versions a and b, empty
// when they are equal.
func (v *View) Diff(a, b uint64) (string, error) {
	va, ok := v.Version(a)
	if !ok {
		return "", fmt.Errorf("no config version %d (%s)", a, v.versionRange())
	}
	vb, ok := v.Version(b)
	if !ok {
		return "", fmt.Errorf("no config version %d (%s)", b, v.versionRange())
	}
	return lineDiff(fmt.Sprintf("version %d", a), fmt.Sprintf("version %d", b), va.YAML, vb.YAML), nil
}

func (v *View) versionRange() string {
	switch n := len(v.versions); n {
	case 0:
		return "no version exists"
	case 1:
		return "version 1 exists"
	default:
		return fmt.Sprintf("versions 1-%d exist", n)
	}
}

// Servers lists the ServerKey of every server of the current config, in
// config order.
func (v *View) Servers() []string { return slices.Clone(v.keys) }

// ServerState returns the runtime state of a server, Admin always set; false
// when the current config has no such server.
func (v *View) ServerState(backend, server string) (ServerState, bool) {
	k := ServerKey(backend, server)
	return v.serverState(k), v.keySet[k]
}

// ServerStates returns the runtime state of every server whose state is not
// the default, keyed by ServerKey.
func (v *View) ServerStates() map[string]ServerState {
	m := make(map[string]ServerState, len(v.servers))
	for k := range v.servers {
		m[k] = v.serverState(k)
	}
	return m
}

// Views returns every node's latest health view, keyed by node name.
func (v *View) Views() map[string]NodeView {
	m := make(map[string]NodeView, len(v.views))
	for n, nv := range v.views {
		nv.Servers = maps.Clone(nv.Servers)
		m[n] = nv
	}
	return m
}

// Verdicts returns the committed health verdicts, keyed by ServerKey, true
// for UP. A server without an entry has never been judged by the cluster:
// the data plane uses its own observation of it.
func (v *View) Verdicts() map[string]bool { return maps.Clone(v.verdicts) }

// VerdictBasis says how the latest verdicts were decided.
func (v *View) VerdictBasis() VerdictBasis {
	b := v.basis
	b.LiveVoters = slices.Clone(b.LiveVoters)
	return b
}

// VerdictChanges computes the verdicts under policy from the views this
// store holds and the live voters the caller (the leader) sees, and returns
// those that differ from the committed ones: the body of the SetVerdicts
// the leader should commit, or nil when there is nothing to commit.
func (v *View) VerdictChanges(liveVoters []string, policy VerdictPolicy) map[string]bool {
	views := make(map[string]map[string]bool, len(v.views))
	for n, nv := range v.views {
		views[n] = nv.Servers // read only: ComputeVerdicts does not write
	}
	var changes map[string]bool
	for k, up := range ComputeVerdicts(v.keys, views, liveVoters, policy, v.verdicts) {
		if prev, ok := v.verdicts[k]; !ok || prev != up {
			if changes == nil {
				changes = map[string]bool{}
			}
			changes[k] = up
		}
	}
	return changes
}

// Disagreements names the live voters whose view contradicts a committed
// verdict (see Disagreements).
func (v *View) Disagreements(liveVoters []string) []Disagreement {
	views := make(map[string]map[string]bool, len(v.views))
	for n, nv := range v.views {
		views[n] = nv.Servers
	}
	return Disagreements(v.verdicts, views, liveVoters)
}

// Nodes lists the nodes by name.
func (v *View) Nodes() []Node {
	ns := slices.Collect(maps.Values(v.nodes))
	slices.SortFunc(ns, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return ns
}

// Node returns the facts of one node.
// NodeByID returns the node with that Raft ID.
func (v *View) NodeByID(id string) (Node, bool) {
	for _, n := range v.nodes {
		if n.ID == id {
			return n, true
		}
	}
	return Node{}, false
}

// Node returns the node of that name.
func (v *View) Node(name string) (Node, bool) {
	n, ok := v.nodes[name]
	return n, ok
}

// Revoked reports whether a certificate serial is on the deny list. Serials
// are compared as NormalizeSerial writes them.
func (v *View) Revoked(serial string) bool {
	_, ok := v.revoked[NormalizeSerial(serial)]
	return ok
}

// Revocations lists the deny list by serial.
func (v *View) Revocations() []Revocation {
	rs := slices.Collect(maps.Values(v.revoked))
	slices.SortFunc(rs, func(a, b Revocation) int { return strings.Compare(a.Serial, b.Serial) })
	return rs
}

// NormalizeSerial writes a certificate serial the one way the deny list
// stores it: lower case, without colons or spaces. Write serials in hex
// (big.Int.Text(16)) on every side.
func NormalizeSerial(serial string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == ':' || r == ' ':
			return -1
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, serial)
}

// serverKeys returns the ServerKey of every server of c, as a list in
// config order and as a set.
func serverKeys(c *Config) ([]string, map[string]bool) {
	var keys []string
	set := map[string]bool{}
	if c == nil {
		return keys, set
	}
	for _, b := range c.Backends {
		for _, s := range b.Servers {
			k := ServerKey(b.Name, s.Name)
			keys = append(keys, k)
			set[k] = true
		}
	}
	return keys, set
}
