package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const docV1 = `frontends:
  - {name: web, bind: ["127.0.0.1:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: "127.0.0.1:9001", check: true}
      - {name: app2, address: "127.0.0.1:9002", check: true}
`

// docV2 changes app2's address and adds app3.
const docV2 = `frontends:
  - {name: web, bind: ["127.0.0.1:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: "127.0.0.1:9001", check: true}
      - {name: app2, address: "127.0.0.1:9012", check: true}
      - {name: app3, address: "127.0.0.1:9003", check: true}
`

// docV3 drops app2.
const docV3 = `frontends:
  - {name: web, bind: ["127.0.0.1:8080"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: app1, address: "127.0.0.1:9001", check: true}
`

const docInvalid = `frontends:
  - {name: web, bind: ["127.0.0.1"], default_backend: nope}
backends:
  - name: app
    servers:
      - {name: app1, address: "127.0.0.1"}
`

// harness applies commands at increasing log indexes.
type harness struct {
	t     testing.TB
	s     *Store
	index uint64
}

func newHarness(t testing.TB) *harness { return &harness{t: t, s: NewStore()} }

func (h *harness) apply(c Command) Result {
	h.t.Helper()
	data, err := Encode(c)
	if err != nil {
		h.t.Fatalf("Encode(%T): %v", c, err)
	}
	h.index++
	r, ok := h.s.Apply(h.index, data).(Result)
	if !ok {
		h.t.Fatalf("Apply(%v) returned no Result", c.Type())
	}
	if r.Index != h.index {
		h.t.Errorf("result index %d, want %d", r.Index, h.index)
	}
	return r
}

func (h *harness) ok(c Command) Result {
	h.t.Helper()
	r := h.apply(c)
	if !r.OK() {
		h.t.Fatalf("%v refused: %s %s %v", c.Type(), r.Code, r.Message, r.Faults)
	}
	return r
}

// refused applies c, expects code, and checks that the state did not
// change.
func (h *harness) refused(c Command, code Code) Result {
	h.t.Helper()
	before := persist(h.t, h.s)
	view := h.s.View()
	r := h.apply(c)
	if r.Code != code {
		h.t.Fatalf("%v: got %s (%s), want %s", c.Type(), r.Code, r.Message, code)
	}
	if r.Message == "" {
		h.t.Errorf("%v refused without a message", c.Type())
	}
	if h.s.View() != view {
		h.t.Errorf("%v refused, yet a new view was published", c.Type())
	}
	after := persist(h.t, h.s)
	// The applied index moves; nothing else may.
	if stripApplied(before) != stripApplied(after) {
		h.t.Errorf("%v refused, yet the state changed:\n%s\n%s", c.Type(), before, after)
	}
	return r
}

func persist(t testing.TB, s *Store) string {
	t.Helper()
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	var b bytes.Buffer
	if err := sn.Persist(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func stripApplied(snap string) string {
	_, rest, _ := strings.Cut(snap, `"change_index"`)
	return rest
}

func (h *harness) join(names ...string) {
	h.t.Helper()
	for _, n := range names {
		h.ok(&NodeUpsert{Name: n, ID: "id-" + n, RaftAddr: n + ":7380", Role: RoleVoter})
	}
}

func TestApplyConfig(t *testing.T) {
	h := newHarness(t)
	if _, ok := h.s.Current(); ok {
		t.Fatal("empty store has a current config")
	}
	r := h.ok(&ApplyConfig{YAML: docV1, Origin: "alice", Time: t0})
	if r.Version != 1 || r.Message != "committed version 1" {
		t.Errorf("result %+v", r)
	}
	cv, ok := h.s.Current()
	if !ok || cv.Version != 1 || cv.Kind != KindApply || cv.Origin != "alice" || cv.Index != 1 || cv.YAML != docV1 {
		t.Fatalf("current %+v", cv)
	}
	if !cv.Time.Equal(t0) || cv.Time.Location().String() != "UTC" {
		t.Errorf("time %v, want %v in UTC", cv.Time, t0)
	}
	if cv.Config == nil || len(cv.Config.Backends[0].Servers) != 2 || cv.Config.Backends[0].Balance != "roundrobin" {
		t.Errorf("parsed config %+v", cv.Config)
	}
	if got := h.s.View().Servers(); strings.Join(got, " ") != "app/app1 app/app2" {
		t.Errorf("servers %v", got)
	}
	r = h.ok(&ApplyConfig{YAML: docV2, Origin: "bob", Time: t0})
	if r.Version != 2 {
		t.Errorf("second apply: version %d", r.Version)
	}
	if v1, _ := h.s.Version(1); v1.YAML != docV1 || v1.Origin != "alice" {
		t.Errorf("version 1 changed: %+v", v1)
	}
}

func TestApplyConfigRefusesInvalidWithEveryFault(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	r := h.refused(&ApplyConfig{YAML: docInvalid, Time: t0}, CodeInvalid)
	paths := map[string]bool{}
	for _, f := range r.Faults {
		paths[f.Path] = true
	}
	for _, p := range []string{"frontends[0].bind[0]", "frontends[0].default_backend", "backends[0].servers[0].address"} {
		if !paths[p] {
			t.Errorf("no fault at %s in %v", p, r.Faults)
		}
	}
	if r.Version != 1 {
		t.Errorf("version %d, want the current one, 1", r.Version)
	}
	// The result crosses the wire with its faults, not as {}.
	js, _ := json.Marshal(r)
	if !strings.Contains(string(js), `"path":"backends[0].servers[0].address","message":"missing port"`) || !strings.Contains(string(js), `"code":"invalid"`) {
		t.Errorf("result JSON %s", js)
	}
	var es Errors
	if err := r.Err(); !errors.As(err, &es) || len(es) != len(r.Faults) || !strings.Contains(err.Error(), "missing port") {
		t.Errorf("Err() = %v", err)
	}
	var ce *CommandError
	if !errors.As(r.Err(), &ce) || ce.Code != CodeInvalid {
		t.Errorf("Err() is not a *CommandError: %v", r.Err())
	}

	// A document that is not even YAML.
	r = h.refused(&ApplyConfig{YAML: "backends: [", Time: t0}, CodeInvalid)
	if !strings.Contains(r.Message, "decode") {
		t.Errorf("message %q", r.Message)
	}
	// Unknown keys are faults too.
	h.refused(&ApplyConfig{YAML: "backendz: []", Time: t0}, CodeInvalid)
	// The proposer must stamp the time.
	h.refused(&ApplyConfig{YAML: docV2}, CodeInvalid)
}

func TestApplyConfigIfVersion(t *testing.T) {
	h := newHarness(t)
	h.refused(&ApplyConfig{YAML: docV1, Time: t0, IfVersion: 1}, CodeStale)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	h.ok(&ApplyConfig{YAML: docV2, Time: t0, IfVersion: 1})
	r := h.refused(&ApplyConfig{YAML: docV3, Time: t0, IfVersion: 1}, CodeStale)
	if r.Message != "stale write: the config is at version 2, not 1" || r.Version != 2 {
		t.Errorf("result %+v", r)
	}
	h.refused(&RollbackConfig{To: 1, Time: t0, IfVersion: 1}, CodeStale)
	if r := h.ok(&ApplyConfig{YAML: docV3, Time: t0, IfVersion: 2}); r.Version != 3 {
		t.Errorf("version %d", r.Version)
	}
}

func TestApplyConfigUnchangedMakesNoVersion(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	view := h.s.View()
	r := h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	if r.Version != 1 || !strings.HasPrefix(r.Message, "unchanged") || h.s.View() != view {
		t.Errorf("re-applying the same document: %+v", r)
	}
}

func TestImport(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Origin: "lb1", Time: t0, Import: true})
	if cv, _ := h.s.Current(); cv.Kind != KindImport || cv.Version != 1 {
		t.Errorf("imported %+v", cv)
	}
	r := h.refused(&ApplyConfig{YAML: docV2, Time: t0, Import: true}, CodeConflict)
	if r.Message != "import refused: the cluster already has config version 1" {
		t.Errorf("message %q", r.Message)
	}
}

func TestRollback(t *testing.T) {
	h := newHarness(t)
	h.refused(&RollbackConfig{To: 1, Time: t0}, CodeNotFound)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	r := h.ok(&RollbackConfig{To: 1, Origin: "carol", Time: t0})
	if r.Version != 3 {
		t.Errorf("rollback made version %d", r.Version)
	}
	cv, _ := h.s.Current()
	if cv.Version != 3 || cv.Kind != KindRollback || cv.Source != 1 || cv.YAML != docV1 || cv.Origin != "carol" || cv.Config == nil {
		t.Errorf("rollback version %+v", cv)
	}
	if got := h.s.View().Servers(); len(got) != 2 {
		t.Errorf("servers after rollback %v", got)
	}
	r = h.refused(&RollbackConfig{To: 9, Time: t0}, CodeNotFound)
	if r.Message != "no config version 9 to roll back to (versions 1-3 exist)" {
		t.Errorf("message %q", r.Message)
	}
	h.refused(&RollbackConfig{To: 0, Time: t0}, CodeNotFound)
	h.refused(&RollbackConfig{To: 2}, CodeInvalid) // no time
	// Version 3 holds version 1's document: rolling back to 1 again is a
	// no-op, not a new version.
	if r := h.ok(&RollbackConfig{To: 1, Time: t0}); r.Version != 3 || !strings.HasPrefix(r.Message, "unchanged") {
		t.Errorf("rollback to the current document: %+v", r)
	}
	if r := h.ok(&RollbackConfig{To: 2, Time: t0, IfVersion: 3}); r.Version != 4 {
		t.Errorf("rollback to 2: %+v", r)
	}
}

func TestHistoryAndDiff(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Origin: "alice", Time: t0, Import: true})
	h.ok(&ApplyConfig{YAML: docV2, Origin: "bob", Time: t0})
	h.ok(&RollbackConfig{To: 1, Origin: "carol", Time: t0})
	hist := h.s.History()
	if len(hist) != 3 {
		t.Fatalf("history %+v", hist)
	}
	for i, want := range []struct {
		kind   ConfigKind
		origin string
		source uint64
	}{{KindImport, "alice", 0}, {KindApply, "bob", 0}, {KindRollback, "carol", 1}} {
		got := hist[i]
		if got.Version != uint64(i+1) || got.Kind != want.kind || got.Origin != want.origin || got.Source != want.source {
			t.Errorf("history[%d] = %+v", i, got)
		}
		if got.YAML != "" || got.Config != nil {
			t.Errorf("history[%d] carries the document", i)
		}
	}
	d, err := h.s.Diff(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := `--- version 1
+++ version 2
@@ -4,4 +4,5 @@
   - name: app
     servers:
       - {name: app1, address: "127.0.0.1:9001", check: true}
-      - {name: app2, address: "127.0.0.1:9002", check: true}
+      - {name: app2, address: "127.0.0.1:9012", check: true}
+      - {name: app3, address: "127.0.0.1:9003", check: true}
`
	if d != want {
		t.Errorf("Diff(1, 2):\n%s\nwant:\n%s", d, want)
	}
	if d, err := h.s.Diff(1, 3); d != "" || err != nil {
		t.Errorf("Diff of equal documents: %q %v", d, err)
	}
	if _, err := h.s.Diff(1, 4); err == nil || err.Error() != "no config version 4 (versions 1-3 exist)" {
		t.Errorf("Diff to a missing version: %v", err)
	}
	if _, err := h.s.Diff(0, 1); err == nil {
		t.Error("Diff from version 0 succeeded")
	}
}

func TestSetServerAdmin(t *testing.T) {
	h := newHarness(t)
	h.refused(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain}, CodeNotFound) // no config yet
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	if st, ok := h.s.ServerState("app", "app1"); !ok || st.Admin != AdminReady || st.Weight != nil {
		t.Errorf("default state %+v %v", st, ok)
	}
	if r := h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain}); r.Message != "app/app1 is now drain" {
		t.Errorf("message %q", r.Message)
	}
	if st, _ := h.s.ServerState("app", "app1"); st.Admin != AdminDrain {
		t.Errorf("state %+v", st)
	}
	view := h.s.View()
	h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain})
	if h.s.View() != view {
		t.Error("setting the same state published a new view")
	}
	h.ok(&SetServerAdmin{Backend: "app", Server: "app2", Admin: AdminMaint})
	if got := h.s.View().ServerStates(); len(got) != 2 || got["app/app2"].Admin != AdminMaint {
		t.Errorf("server states %+v", got)
	}
	h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminReady})
	if got := h.s.View().ServerStates(); len(got) != 1 {
		t.Errorf("a ready server is still listed: %+v", got)
	}
	r := h.refused(&SetServerAdmin{Backend: "app", Server: "app9", Admin: AdminDrain}, CodeNotFound)
	if r.Message != `unknown server "app9" in backend "app" (config version 1)` {
		t.Errorf("message %q", r.Message)
	}
	h.refused(&SetServerAdmin{Backend: "nope", Server: "app1", Admin: AdminDrain}, CodeNotFound)
	h.refused(&SetServerAdmin{Backend: "app", Server: "app1", Admin: "sleep"}, CodeInvalid)
	h.refused(&SetServerAdmin{Backend: "app", Server: "app1"}, CodeInvalid)
	if _, ok := h.s.ServerState("app", "app9"); ok {
		t.Error("ServerState of an unknown server reports it exists")
	}
}

func TestSetServerWeight(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	w := 5
	h.ok(&SetServerWeight{Backend: "app", Server: "app1", Weight: &w})
	w = 6 // the store holds its own copy
	st, _ := h.s.ServerState("app", "app1")
	if st.Weight == nil || *st.Weight != 5 || st.Admin != AdminReady {
		t.Fatalf("state %+v", st)
	}
	*st.Weight = 9 // and hands out copies
	if st, _ := h.s.ServerState("app", "app1"); *st.Weight != 5 {
		t.Error("ServerState shares its weight")
	}
	h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain})
	h.ok(&SetServerWeight{Backend: "app", Server: "app1"}) // reset
	if st, _ := h.s.ServerState("app", "app1"); st.Weight != nil || st.Admin != AdminDrain {
		t.Errorf("after reset %+v", st)
	}
	zero := 0
	h.ok(&SetServerWeight{Backend: "app", Server: "app2", Weight: &zero})
	for _, bad := range []int{-1, 257} {
		h.refused(&SetServerWeight{Backend: "app", Server: "app1", Weight: &bad}, CodeInvalid)
	}
	h.refused(&SetServerWeight{Backend: "app", Server: "app7", Weight: &w}, CodeNotFound)
}

func TestConfigChangeKeepsStateOfRemainingServersOnly(t *testing.T) {
	h := newHarness(t)
	h.join("lb1")
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain})
	h.ok(&SetServerAdmin{Backend: "app", Server: "app2", Admin: AdminMaint})
	h.ok(&HealthView{Node: "lb1", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": false, "app/app2": true}})
	h.ok(&SetVerdicts{Verdicts: map[string]bool{"app/app1": false, "app/app2": true}})
	h.ok(&ApplyConfig{YAML: docV3, Time: t0}) // drops app2 and app3
	if st, _ := h.s.ServerState("app", "app1"); st.Admin != AdminDrain {
		t.Errorf("app1 lost its state: %+v", st)
	}
	if got := h.s.View().ServerStates(); len(got) != 1 {
		t.Errorf("server states %+v", got)
	}
	// A reload never resets health: app1 stays DOWN.
	if got := h.s.Verdicts(); len(got) != 1 || got["app/app1"] != false {
		t.Errorf("verdicts %v", got)
	}
	if got := h.s.Views()["lb1"].Servers; len(got) != 1 || got["app/app1"] != false {
		t.Errorf("view %v", got)
	}
	// app2 comes back afresh.
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	if st, _ := h.s.ServerState("app", "app2"); st.Admin != AdminReady {
		t.Errorf("re-added app2 kept its old state: %+v", st)
	}
}

func TestHealthView(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	h.refused(&HealthView{Node: "lb1", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true}}, CodeNotFound)
	h.join("lb1", "lb2")
	h.ok(&HealthView{Node: "lb1", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": true}})
	// A delta merges.
	h.ok(&HealthView{Node: "lb1", Seq: 2, Servers: map[string]bool{"app/app2": false, "app/app3": true}})
	got := h.s.Views()["lb1"]
	if got.Seq != 2 || got.Index != h.index || len(got.Servers) != 3 || !got.Servers["app/app1"] || got.Servers["app/app2"] || !got.Servers["app/app3"] {
		t.Errorf("after delta %+v", got)
	}
	// A full view replaces.
	h.ok(&HealthView{Node: "lb1", Seq: 5, Full: true, Servers: map[string]bool{"app/app3": false}})
	if got := h.s.Views()["lb1"].Servers; len(got) != 1 || got["app/app3"] {
		t.Errorf("after full %v", got)
	}
	// Retried or reordered reports cannot undo a newer one.
	r := h.refused(&HealthView{Node: "lb1", Seq: 5, Servers: map[string]bool{"app/app3": true}}, CodeStale)
	if r.Message != "stale health view from lb1: seq 5, the store holds seq 5" {
		t.Errorf("message %q", r.Message)
	}
	h.refused(&HealthView{Node: "lb1", Seq: 3, Full: true}, CodeStale)
	h.refused(&HealthView{Node: "lb2", Seq: 0, Full: true}, CodeInvalid)
	// Servers the config does not have are dropped, and said so.
	r = h.ok(&HealthView{Node: "lb2", Seq: 1, Full: true, Servers: map[string]bool{"app/zz": true, "app/app1": false, "old/x": true}})
	if r.Message != "ignored servers the current config does not have: app/zz, old/x" {
		t.Errorf("message %q", r.Message)
	}
	if got := h.s.Views()["lb2"].Servers; len(got) != 1 {
		t.Errorf("lb2 view %v", got)
	}
	// Views hands out copies.
	h.s.Views()["lb2"].Servers["app/app1"] = true
	if h.s.Views()["lb2"].Servers["app/app1"] {
		t.Error("Views shares its maps")
	}
}

func TestSetVerdicts(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	h.ok(&SetVerdicts{Verdicts: map[string]bool{"app/app1": true, "app/app2": false}, Term: 4, LiveVoters: []string{"lb2", "lb1", "lb2"}, Policy: PolicyMajority})
	r := h.ok(&SetVerdicts{Verdicts: map[string]bool{"app/app2": true, "gone/x": false}, Term: 5})
	if r.Message != "ignored servers the current config does not have: gone/x" {
		t.Errorf("message %q", r.Message)
	}
	if got := h.s.Verdicts(); len(got) != 2 || !got["app/app1"] || !got["app/app2"] {
		t.Errorf("verdicts %v", got)
	}
	b := h.s.View().VerdictBasis()
	if b.Term != 5 || b.Index != h.index || b.LiveVoters != nil {
		t.Errorf("basis %+v", b)
	}
	h.refused(&SetVerdicts{Verdicts: map[string]bool{"app/app1": false}, Policy: "most"}, CodeInvalid)
	h.ok(&SetVerdicts{Verdicts: map[string]bool{"app/app1": false}, LiveVoters: []string{"lb2", "lb1", "lb2"}})
	if b := h.s.View().VerdictBasis(); strings.Join(b.LiveVoters, ",") != "lb1,lb2" {
		t.Errorf("live voters %v", b.LiveVoters)
	}
}

func TestVerdictChangesAndDisagreements(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	h.join("lb1", "lb2", "lb3")
	h.ok(&HealthView{Node: "lb1", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": false}})
	h.ok(&HealthView{Node: "lb2", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": false, "app/app2": false}})
	h.ok(&HealthView{Node: "lb3", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": false}})
	live := []string{"lb1", "lb2", "lb3"}
	ch := h.s.View().VerdictChanges(live, PolicyMajority)
	if len(ch) != 2 || !ch["app/app1"] || ch["app/app2"] {
		t.Fatalf("changes %v", ch)
	}
	h.ok(&SetVerdicts{Verdicts: ch, LiveVoters: live})
	if ch := h.s.View().VerdictChanges(live, PolicyMajority); ch != nil {
		t.Errorf("changes after commit %v", ch)
	}
	d := h.s.View().Disagreements(live)
	if len(d) != 1 || d[0].String() != "lb2 sees app/app1 DOWN (verdict UP)" {
		t.Errorf("disagreements %v", d)
	}
	// lb1 and lb3 die: lb2 alone now decides app1.
	if ch := h.s.View().VerdictChanges([]string{"lb2"}, PolicyMajority); len(ch) != 1 || ch["app/app1"] {
		t.Errorf("changes with lb2 alone %v", ch)
	}
}

func TestNodes(t *testing.T) {
	h := newHarness(t)
	lb2 := NodeUpsert{Name: "lb2", ID: "id-2", RaftAddr: "10.0.0.2:7380", APIAddr: "10.0.0.2:7443", GossipAddr: "10.0.0.2:7946", Role: RoleVoter, Version: "1.0"}
	h.ok(&lb2)
	h.ok(&NodeUpsert{Name: "lb1", ID: "id-1", RaftAddr: "10.0.0.1:7380", Role: RoleWitness})
	nodes := h.s.Nodes()
	if len(nodes) != 2 || nodes[0].Name != "lb1" || nodes[1] != Node(lb2) {
		t.Fatalf("nodes %+v", nodes)
	}
	view := h.s.View()
	h.ok(&lb2)
	if h.s.View() != view {
		t.Error("an unchanged upsert published a new view")
	}
	lb2.Version = "1.1"
	h.ok(&lb2)
	if n, _ := h.s.View().Node("lb2"); n.Version != "1.1" {
		t.Errorf("upgrade not recorded: %+v", n)
	}
	h.refused(&NodeUpsert{Name: "lb2", ID: "id-9", RaftAddr: "10.0.0.9:7380", Role: RoleVoter}, CodeConflict)
	h.refused(&NodeUpsert{Name: "lb9", ID: "id-1", RaftAddr: "10.0.0.9:7380", Role: RoleVoter}, CodeConflict)
	r := h.refused(&NodeUpsert{Name: "lb 3", RaftAddr: "nowhere", APIAddr: "x", Role: "boss"}, CodeInvalid)
	var paths []string
	for _, f := range r.Faults {
		paths = append(paths, f.Path)
	}
	if strings.Join(paths, " ") != "name id role raft_addr api_addr" {
		t.Errorf("faults %v", r.Faults)
	}

	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	h.ok(&HealthView{Node: "lb2", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true}})
	h.ok(&NodeRemove{Name: "lb2"})
	if _, ok := h.s.Views()["lb2"]; ok || len(h.s.Nodes()) != 1 {
		t.Error("a removed node keeps its view or its facts")
	}
	h.refused(&NodeRemove{Name: "lb2"}, CodeNotFound)
	// A removed node may join again, even under a new ID.
	h.ok(&NodeUpsert{Name: "lb2", ID: "id-2b", RaftAddr: "10.0.0.2:7380", Role: RoleVoter})
	// and its health reports start afresh.
	h.ok(&HealthView{Node: "lb2", Seq: 1, Full: true})
}

func TestRevokeCert(t *testing.T) {
	h := newHarness(t)
	if h.s.Revoked("0a1b") {
		t.Fatal("empty deny list denies")
	}
	h.ok(&RevokeCert{Serial: "0A:1B", Node: "lb3"})
	for _, s := range []string{"0a1b", "0A1B", "0a:1b"} {
		if !h.s.Revoked(s) {
			t.Errorf("Revoked(%q) = false", s)
		}
	}
	if h.s.Revoked("0a1c") {
		t.Error("another serial is denied")
	}
	view := h.s.View()
	h.ok(&RevokeCert{Serial: "0a1b", Node: "other"})
	if h.s.View() != view {
		t.Error("revoking twice changed the state")
	}
	if rs := h.s.View().Revocations(); len(rs) != 1 || rs[0] != (Revocation{Serial: "0a1b", Node: "lb3", Index: 1}) {
		t.Errorf("revocations %+v", rs)
	}
	h.refused(&RevokeCert{Serial: " : "}, CodeInvalid)
}

func TestNoopIsAppliedNotIgnored(t *testing.T) {
	h := newHarness(t)
	view := h.s.View()
	r := h.ok(&Noop{Note: "barrier"})
	if r.Code != CodeOK || h.s.View() != view || h.s.AppliedIndex() != 1 {
		t.Errorf("noop: %+v", r)
	}
}

func TestUnknownCommand(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	before := persist(t, h.s)

	// With the ignore bit: skipped, and said so.
	data, _ := EncodeCommand(IgnoreUnknown|0x7e, map[string]string{"future": "field"})
	r := h.s.Apply(2, data).(Result)
	if r.Code != CodeIgnored || r.Index != 2 || !strings.Contains(r.Message, "0xfe") {
		t.Errorf("flagged unknown: %+v", r)
	}
	if h.s.AppliedIndex() != 2 || stripApplied(persist(t, h.s)) != stripApplied(before) {
		t.Error("a skipped entry changed the state")
	}

	// Without it: stop rather than diverge.
	data, _ = EncodeCommand(0x7e, map[string]string{"future": "field"})
	func() {
		defer func() {
			msg, _ := recover().(string)
			if !strings.Contains(msg, "0x7e") || !strings.Contains(msg, "index 3") || !strings.Contains(msg, "upgrade") {
				t.Errorf("panic %q", msg)
			}
		}()
		h.s.Apply(3, data)
		t.Error("unknown command applied without panic")
	}()
	if stripApplied(persist(t, h.s)) != stripApplied(before) {
		t.Error("the unknown entry changed the state")
	}
	// The store still works (raft would have stopped; a test may go on).
	if r := h.s.Apply(4, mustEncode(t, &Noop{})).(Result); !r.OK() {
		t.Errorf("after panic: %+v", r)
	}
}

func TestMalformedEntry(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	for _, data := range [][]byte{
		nil,
		{byte(TypeApplyConfig)},
		append([]byte{byte(TypeApplyConfig)}, `{"yaml": 5}`...),
		append([]byte{byte(TypeNoop)}, `[`...),
	} {
		view := h.s.View()
		r := h.s.Apply(7, data).(Result)
		if r.Code != CodeMalformed || r.Message == "" || h.s.View() != view {
			t.Errorf("Apply(%q) = %+v", data, r)
		}
	}
}

func mustEncode(t testing.TB, c Command) []byte {
	t.Helper()
	data, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWatch(t *testing.T) {
	h := newHarness(t)
	ch := h.s.Watch()
	h.refused(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain}, CodeNotFound)
	select {
	case <-ch:
		t.Fatal("a refused command woke the watchers")
	default:
	}
	v := h.s.View()
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	select {
	case <-ch:
	default:
		t.Fatal("a commit did not wake the watchers")
	}
	if _, ok := v.Current(); ok {
		t.Error("an old view changed")
	}
	select {
	case <-h.s.Watch():
		t.Fatal("the new channel is already closed")
	default:
	}
}
