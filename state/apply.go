package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
)

// handler applies one decoded command to next, a copy of the current view
// that it may change by replacing fields (never by writing into a map it
// did not make). It reports whether the state changed; a result other than
// OK discards next.
type handler func(next *View, c Command) (Result, bool)

// on adapts a handler of one concrete command type.
func on[C Command](fn func(next *View, c C) (Result, bool)) handler {
	return func(next *View, c Command) (Result, bool) { return fn(next, c.(C)) }
}

// handlers is the dispatch table, built per store.
func handlers() map[CommandType]handler {
	return map[CommandType]handler{
		TypeApplyConfig:     on(applyConfig),
		TypeRollbackConfig:  on(rollbackConfig),
		TypeSetServerAdmin:  on(setServerAdmin),
		TypeSetServerWeight: on(setServerWeight),
		TypeHealthView:      on(healthView),
		TypeSetVerdicts:     on(setVerdicts),
		TypeNodeUpsert:      on(nodeUpsert),
		TypeNodeRemove:      on(nodeRemove),
		TypeRevokeCert:      on(revokeCert),
		TypeNoop:            on(func(*View, *Noop) (Result, bool) { return ok(""), false }),
	}
}

// Apply applies one committed log entry and returns its Result. It is
// deterministic: it reads no clock, draws no random number and lets no map
// order leak, so every node that applies the same log holds the same state.
//
// A command the state refuses (an invalid config, a stale --if-version, an
// unknown server) leaves the state unchanged and says why in the Result. An
// entry whose type this version does not know is skipped when the type
// carries IgnoreUnknown (the Result says so, with CodeIgnored); otherwise
// Apply panics, because going on without it would make this node diverge
// from the others: the node must be upgraded.
func (s *Store) Apply(index uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := s.apply(index, data)
	res.Index = index
	s.applied.Store(index)
	return res
}

func (s *Store) apply(index uint64, data []byte) Result {
	if len(data) == 0 {
		return refuse(CodeMalformed, "empty command")
	}
	t := CommandType(data[0])
	h := s.handlers[t]
	if h == nil {
		if t.Ignorable() {
			return refuse(CodeIgnored, "skipped command type 0x%02x: unknown to this version, flagged ignore-if-unknown", uint8(t))
		}
		panic(fmt.Sprintf("state: log index %d holds command type 0x%02x, unknown to this version; "+
			"stopping rather than diverging from the cluster: upgrade this node", index, uint8(t)))
	}
	body := newBody(t)
	if err := json.Unmarshal(data[1:], body); err != nil {
		return refuse(CodeMalformed, "decode %v: %v", t, err)
	}
	cur := s.cur.Load()
	next := cur.next(index)
	res, changed := h(next, body)
	if res.OK() && changed {
		s.publish(next)
	}
	return res
}

func ok(format string, args ...any) Result {
	return Result{Code: CodeOK, Message: fmt.Sprintf(format, args...)}
}

func refuse(code Code, format string, args ...any) Result {
	return Result{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (v *View) latest() *ConfigVersion {
	if len(v.versions) == 0 {
		return nil
	}
	return v.versions[len(v.versions)-1]
}

func (v *View) currentNumber() uint64 { return uint64(len(v.versions)) }

// checkIfVersion refuses a conditional write that lost a race.
func (v *View) checkIfVersion(want uint64) (Result, bool) {
	if want == 0 || want == v.currentNumber() {
		return Result{}, true
	}
	r := refuse(CodeStale, "stale write: the config is at version %d, not %d", v.currentNumber(), want)
	r.Version = v.currentNumber()
	return r, false
}

func applyConfig(next *View, c *ApplyConfig) (Result, bool) {
	if c.Time.IsZero() {
		return refuse(CodeInvalid, "time: missing (the proposer sets it)"), false
	}
	cur := next.latest()
	if c.Import && cur != nil {
		r := refuse(CodeConflict, "import refused: the cluster already has config version %d", cur.Version)
		r.Version = cur.Version
		return r, false
	}
	if r, ok := next.checkIfVersion(c.IfVersion); !ok {
		return r, false
	}
	cfg, err := Parse([]byte(c.YAML))
	if err != nil {
		r := refuse(CodeInvalid, "invalid config: %v", err)
		var es Errors
		if errors.As(err, &es) {
			r.Message = fmt.Sprintf("invalid config: %d fault(s)", len(es))
			r.Faults = slices.Clone(es)
		}
		r.Version = next.currentNumber()
		return r, false
	}
	if cur != nil && cur.YAML == c.YAML {
		r := ok("unchanged: version %d holds this document", cur.Version)
		r.Version = cur.Version
		return r, false
	}
	kind := KindApply
	if c.Import {
		kind = KindImport
	}
	next.addVersion(&ConfigVersion{Kind: kind, Time: c.Time.UTC(), Origin: c.Origin, YAML: c.YAML, Config: cfg})
	r := ok("committed version %d", next.currentNumber())
	r.Version = next.currentNumber()
	return r, true
}

func rollbackConfig(next *View, c *RollbackConfig) (Result, bool) {
	if c.Time.IsZero() {
		return refuse(CodeInvalid, "time: missing (the proposer sets it)"), false
	}
	if r, ok := next.checkIfVersion(c.IfVersion); !ok {
		return r, false
	}
	target, found := next.Version(c.To)
	if !found {
		r := refuse(CodeNotFound, "no config version %d to roll back to (%s)", c.To, next.versionRange())
		r.Version = next.currentNumber()
		return r, false
	}
	if target.Config == nil {
		r := refuse(CodeInvalid, "version %d no longer parses: %s", c.To, target.ParseError)
		r.Version = next.currentNumber()
		return r, false
	}
	if cur := next.latest(); cur.YAML == target.YAML {
		r := ok("unchanged: version %d already holds the document of version %d", cur.Version, c.To)
		r.Version = cur.Version
		return r, false
	}
	next.addVersion(&ConfigVersion{
		Kind: KindRollback, Time: c.Time.UTC(), Origin: c.Origin, Source: c.To,
		YAML: target.YAML, Config: target.Config,
	})
	r := ok("committed version %d (the document of version %d)", next.currentNumber(), c.To)
	r.Version = next.currentNumber()
	return r, true
}

// addVersion appends cv as the next version and drops the runtime state,
// health views and verdicts of servers the new config no longer has: a
// server removed and added again starts afresh. Servers that stay keep all
// of it; a reload never resets health to UP.
func (v *View) addVersion(cv *ConfigVersion) {
	cv.Version = v.currentNumber() + 1
	cv.Index = v.index
	v.versions = append(slices.Clip(v.versions), cv)
	v.keys, v.keySet = serverKeys(cv.Config)
	v.servers = keepKeys(v.servers, v.keySet)
	v.verdicts = keepKeys(v.verdicts, v.keySet)
	views := make(map[string]NodeView, len(v.views))
	for n, nv := range v.views {
		nv.Servers = keepKeys(nv.Servers, v.keySet)
		views[n] = nv
	}
	v.views = views
}

// keepKeys returns a new map with the entries of m whose key is in keep.
func keepKeys[V any](m map[string]V, keep map[string]bool) map[string]V {
	out := make(map[string]V, len(m))
	for k, val := range m {
		if keep[k] {
			out[k] = val
		}
	}
	return out
}

// findServer refuses a server the current config does not have.
func (v *View) findServer(backend, server string) (string, Result, bool) {
	cur := v.latest()
	if cur == nil || cur.Config == nil {
		return "", refuse(CodeNotFound, "no config is committed yet"), false
	}
	for _, b := range cur.Config.Backends {
		if b.Name != backend {
			continue
		}
		for _, s := range b.Servers {
			if s.Name == server {
				return ServerKey(backend, server), Result{}, true
			}
		}
		return "", refuse(CodeNotFound, "unknown server %q in backend %q (config version %d)", server, backend, cur.Version), false
	}
	return "", refuse(CodeNotFound, "unknown backend %q (config version %d)", backend, cur.Version), false
}

// setServer records a server's new runtime state, keeping only states that
// differ from the default.
func (v *View) setServer(key string, st ServerState) bool {
	if v.serverState(key).equal(st) {
		return false
	}
	v.servers = maps.Clone(v.servers)
	if st.isDefault() {
		delete(v.servers, key)
	} else {
		v.servers[key] = st
	}
	return true
}

func setServerAdmin(next *View, c *SetServerAdmin) (Result, bool) {
	switch c.Admin {
	case AdminReady, AdminDrain, AdminMaint:
	default:
		return refuse(CodeInvalid, "admin: unknown state %q (want ready, drain or maint)", c.Admin), false
	}
	key, r, found := next.findServer(c.Backend, c.Server)
	if !found {
		return r, false
	}
	st := next.serverState(key)
	st.Admin = c.Admin
	if !next.setServer(key, st) {
		return ok("%s is already %s", key, c.Admin), false
	}
	return ok("%s is now %s", key, c.Admin), true
}

func setServerWeight(next *View, c *SetServerWeight) (Result, bool) {
	if c.Weight != nil && (*c.Weight < 0 || *c.Weight > 256) {
		return refuse(CodeInvalid, "weight: must be between 0 and 256, got %d", *c.Weight), false
	}
	key, r, found := next.findServer(c.Backend, c.Server)
	if !found {
		return r, false
	}
	st := next.serverState(key)
	st.Weight = nil
	what := "the configured weight"
	if c.Weight != nil {
		st.Weight = ptr(*c.Weight)
		what = fmt.Sprintf("weight %d", *c.Weight)
	}
	if !next.setServer(key, st) {
		return ok("%s already has %s", key, what), false
	}
	return ok("%s now has %s", key, what), true
}

func healthView(next *View, c *HealthView) (Result, bool) {
	if _, known := next.nodes[c.Node]; !known {
		return refuse(CodeNotFound, "health view from unknown node %q (a node reports after it has joined)", c.Node), false
	}
	if c.Seq == 0 {
		return refuse(CodeInvalid, "seq: must be at least 1"), false
	}
	held := next.views[c.Node]
	if c.Seq <= held.Seq {
		return refuse(CodeStale, "stale health view from %s: seq %d, the store holds seq %d", c.Node, c.Seq, held.Seq), false
	}
	servers := map[string]bool{}
	if !c.Full {
		maps.Copy(servers, held.Servers)
	}
	var unknown []string
	for k, up := range c.Servers {
		if next.keySet[k] {
			servers[k] = up
		} else {
			unknown = append(unknown, k)
		}
	}
	next.views = maps.Clone(next.views)
	next.views[c.Node] = NodeView{Seq: c.Seq, Index: next.index, Servers: servers}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return ok("ignored servers the current config does not have: %s", strings.Join(unknown, ", ")), true
	}
	return ok(""), true
}

func setVerdicts(next *View, c *SetVerdicts) (Result, bool) {
	if c.Policy != "" {
		if _, err := ParseVerdictPolicy(string(c.Policy)); err != nil {
			return refuse(CodeInvalid, "policy: %v", err), false
		}
	}
	verdicts := maps.Clone(next.verdicts)
	var unknown []string
	for k, up := range c.Verdicts {
		if next.keySet[k] {
			verdicts[k] = up
		} else {
			unknown = append(unknown, k)
		}
	}
	voters := slices.Clone(c.LiveVoters)
	slices.Sort(voters)
	next.verdicts = verdicts
	next.basis = VerdictBasis{Term: c.Term, LiveVoters: slices.Compact(voters), Policy: c.Policy, Index: next.index}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return ok("ignored servers the current config does not have: %s", strings.Join(unknown, ", ")), true
	}
	return ok(""), true
}

func nodeUpsert(next *View, c *NodeUpsert) (Result, bool) {
	var faults []FieldError
	fault := func(path, format string, args ...any) {
		faults = append(faults, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if !validName(c.Name) {
		fault("name", "invalid node name %q (letters, digits, '-', '_', '.')", c.Name)
	}
	if c.ID == "" {
		fault("id", "missing")
	}
	if c.Role != RoleVoter && c.Role != RoleWitness {
		fault("role", "unknown role %q (want voter or witness)", c.Role)
	}
	for _, a := range []struct {
		path, addr string
		required   bool
	}{{"raft_addr", c.RaftAddr, true}, {"api_addr", c.APIAddr, false}, {"gossip_addr", c.GossipAddr, false}} {
		if a.addr == "" && !a.required {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil || a.addr == "" {
			fault(a.path, "want host:port, got %q", a.addr)
		}
	}
	if len(faults) > 0 {
		r := refuse(CodeInvalid, "invalid node %q", c.Name)
		r.Faults = faults
		return r, false
	}
	node := Node(*c)
	if old, found := next.nodes[c.Name]; found && old.ID != c.ID {
		return refuse(CodeConflict, "node name %q is held by node ID %s; remove that node first", c.Name, old.ID), false
	}
	for _, n := range next.Nodes() {
		if n.ID == c.ID && n.Name != c.Name {
			return refuse(CodeConflict, "node ID %s is already named %q", c.ID, n.Name), false
		}
	}
	if old, found := next.nodes[c.Name]; found && old == node {
		return ok("node %s unchanged", c.Name), false
	}
	next.nodes = maps.Clone(next.nodes)
	next.nodes[c.Name] = node
	return ok(""), true
}

func nodeRemove(next *View, c *NodeRemove) (Result, bool) {
	if _, found := next.nodes[c.Name]; !found {
		return refuse(CodeNotFound, "unknown node %q", c.Name), false
	}
	next.nodes = maps.Clone(next.nodes)
	delete(next.nodes, c.Name)
	if _, has := next.views[c.Name]; has {
		next.views = maps.Clone(next.views)
		delete(next.views, c.Name)
	}
	return ok(""), true
}

func revokeCert(next *View, c *RevokeCert) (Result, bool) {
	serial := NormalizeSerial(c.Serial)
	if serial == "" {
		return refuse(CodeInvalid, "serial: missing"), false
	}
	if _, done := next.revoked[serial]; done {
		return ok("serial %s is already revoked", serial), false
	}
	next.revoked = maps.Clone(next.revoked)
	next.revoked[serial] = Revocation{Serial: serial, Node: c.Node, Index: next.index}
	return ok(""), true
}
