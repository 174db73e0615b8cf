package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// script is a log that exercises every command, refusals included.
func script() []Command {
	w := 3
	return []Command{
		&NodeUpsert{Name: "lb1", ID: "id-1", RaftAddr: "10.0.0.1:7380", Role: RoleVoter},
		&NodeUpsert{Name: "lb2", ID: "id-2", RaftAddr: "10.0.0.2:7380", Role: RoleVoter},
		&NodeUpsert{Name: "lb3", ID: "id-3", RaftAddr: "10.0.0.3:7380", Role: RoleWitness},
		&ApplyConfig{YAML: docV1, Origin: "lb1", Time: t0, Import: true},
		&ApplyConfig{YAML: docInvalid, Origin: "alice", Time: t0},
		&ApplyConfig{YAML: docV2, Origin: "alice", Time: t0.Add(time.Minute), IfVersion: 1},
		&ApplyConfig{YAML: docV3, Origin: "bob", Time: t0, IfVersion: 1},
		&SetServerAdmin{Backend: "app", Server: "app2", Admin: AdminDrain},
		&SetServerWeight{Backend: "app", Server: "app1", Weight: &w},
		&SetServerAdmin{Backend: "app", Server: "app9", Admin: AdminMaint},
		&HealthView{Node: "lb1", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": true, "app/app3": false}},
		&HealthView{Node: "lb2", Seq: 1, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": false, "app/app3": false, "x/y": true, "x/z": true, "w/w": false}},
		&HealthView{Node: "lb2", Seq: 2, Servers: map[string]bool{"app/app2": true}},
		&HealthView{Node: "lb2", Seq: 2, Servers: map[string]bool{"app/app2": false}},
		&SetVerdicts{Verdicts: map[string]bool{"app/app1": true, "app/app2": true, "app/app3": false}, Term: 2, LiveVoters: []string{"lb2", "lb1"}},
		&RevokeCert{Serial: "DE:AD:BE:EF", Node: "old"},
		&Noop{Note: "x"},
		&RollbackConfig{To: 1, Origin: "carol", Time: t0.Add(time.Hour)},
		&ApplyConfig{YAML: docV2, Origin: "dave", Time: t0.Add(2 * time.Hour)},
		&NodeRemove{Name: "lb3"},
		&NodeRemove{Name: "lb9"},
	}
}

func runScript(t testing.TB, cmds []Command) *harness {
	h := newHarness(t)
	for _, c := range cmds {
		h.apply(c)
	}
	return h
}

func TestApplyIsDeterministic(t *testing.T) {
	a := runScript(t, script())
	b := runScript(t, script())
	sa, sb := persist(t, a.s), persist(t, b.s)
	if sa != sb {
		t.Fatalf("two stores, one log, two states:\n%s\n%s", sa, sb)
	}
	// The script really built something.
	for _, want := range []string{`"drain"`, `"deadbeef"`, `"kind":"rollback"`, `"lb2"`, `"weight":3`} {
		if !strings.Contains(sa, want) {
			t.Errorf("snapshot lacks %s:\n%s", want, sa)
		}
	}
	// Results too are the same on every node.
	ra, rb := newHarness(t), newHarness(t)
	for _, c := range script() {
		x, y := ra.apply(c), rb.apply(c)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%v: results differ: %+v vs %+v", c.Type(), x, y)
		}
	}
}

// TestRestoreThenContinue: a node that restores a snapshot taken midway and
// applies the rest of the log ends where a node that applied all of it did.
func TestRestoreThenContinue(t *testing.T) {
	cmds := script()
	full := runScript(t, cmds)
	for cut := 0; cut <= len(cmds); cut++ {
		head := runScript(t, cmds[:cut])
		var buf bytes.Buffer
		sn, _ := head.s.Snapshot()
		if err := sn.Persist(&buf); err != nil {
			t.Fatal(err)
		}
		sn.Release()
		tail := newHarness(t)
		if err := tail.s.Restore(&buf); err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		tail.index = tail.s.AppliedIndex()
		for _, c := range cmds[cut:] {
			tail.apply(c)
		}
		if got, want := persist(t, tail.s), persist(t, full.s); got != want {
			t.Fatalf("cut %d: restored then continued:\n%s\nwant\n%s", cut, got, want)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := runScript(t, script())
	first := persist(t, h.s)
	r := NewStore()
	if err := r.Restore(strings.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	if second := persist(t, r); second != first {
		t.Fatalf("round trip changed the snapshot:\n%s\n%s", first, second)
	}
	if r.AppliedIndex() != h.s.AppliedIndex() || r.View().Index() != h.s.View().Index() {
		t.Errorf("indexes %d/%d, want %d/%d", r.AppliedIndex(), r.View().Index(), h.s.AppliedIndex(), h.s.View().Index())
	}
	// Every reader agrees, parsed configs included.
	for n := uint64(1); n <= 4; n++ {
		a, _ := h.s.Version(n)
		b, _ := r.Version(n)
		if !a.Time.Equal(b.Time) {
			t.Errorf("version %d time %v vs %v", n, a.Time, b.Time)
		}
		a.Time, b.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("version %d differs after restore:\n%+v\n%+v", n, a, b)
		}
	}
	for name, pair := range map[string][2]any{
		"views":        {h.s.Views(), r.Views()},
		"verdicts":     {h.s.Verdicts(), r.Verdicts()},
		"nodes":        {h.s.Nodes(), r.Nodes()},
		"servers":      {h.s.View().ServerStates(), r.View().ServerStates()},
		"keys":         {h.s.View().Servers(), r.View().Servers()},
		"basis":        {h.s.View().VerdictBasis(), r.View().VerdictBasis()},
		"revocations":  {h.s.View().Revocations(), r.View().Revocations()},
		"disagreement": {h.s.View().Disagreements([]string{"lb1", "lb2"}), r.View().Disagreements([]string{"lb1", "lb2"})},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s differ after restore: %+v vs %+v", name, pair[0], pair[1])
		}
	}
}

func TestSnapshotIsAPointInTime(t *testing.T) {
	h := runScript(t, script())
	want := persist(t, h.s)
	sn, _ := h.s.Snapshot()
	defer sn.Release()
	h.ok(&ApplyConfig{YAML: docV3, Time: t0})
	h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminMaint})
	var buf bytes.Buffer
	if err := sn.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != want {
		t.Error("a snapshot saw commands applied after it was taken")
	}
}

func TestRestoreRefusesBadSnapshotsAndKeepsState(t *testing.T) {
	h := runScript(t, script())
	good := persist(t, h.s)
	var f map[string]any
	if err := json.Unmarshal([]byte(good), &f); err != nil {
		t.Fatal(err)
	}
	edit := func(fn func(map[string]any)) string {
		var c map[string]any
		_ = json.Unmarshal([]byte(good), &c)
		fn(c)
		b, _ := json.Marshal(c)
		return string(b)
	}
	for name, snap := range map[string]string{
		"garbage":     "not json",
		"empty":       "",
		"future":      edit(func(c map[string]any) { c["format"] = SnapshotFormat + 1 }),
		"no format":   edit(func(c map[string]any) { delete(c, "format") }),
		"gap":         edit(func(c map[string]any) { vs := c["versions"].([]any); c["versions"] = vs[1:] }),
		"twin nodes":  edit(func(c map[string]any) { ns := c["nodes"].([]any); c["nodes"] = append(ns, ns[0]) }),
		"wrong shape": edit(func(c map[string]any) { c["nodes"] = "lb1" }),
	} {
		view := h.s.View()
		if err := h.s.Restore(strings.NewReader(snap)); err == nil {
			t.Errorf("%s: restored", name)
		}
		if h.s.View() != view || persist(t, h.s) != good {
			t.Errorf("%s: a failed restore changed the state", name)
		}
	}
}

// TestRestoreKeepsAVersionThatNoLongerParses: history the cluster agreed on
// is kept even when this code would refuse the document today.
func TestRestoreKeepsAVersionThatNoLongerParses(t *testing.T) {
	h := newHarness(t)
	h.ok(&ApplyConfig{YAML: docV1, Time: t0})
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	snap := strings.Replace(persist(t, h.s), `name: app1`, `name: app1, bogus_key: 1`, 1)
	r := &harness{t: t, s: NewStore(), index: 2}
	if err := r.s.Restore(strings.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	v1, _ := r.s.Version(1)
	if v1.Config != nil || !strings.Contains(v1.ParseError, "bogus_key") {
		t.Errorf("version 1: config %v, parse error %q", v1.Config, v1.ParseError)
	}
	if cur, _ := r.s.Current(); cur.Config == nil {
		t.Error("version 2 did not parse")
	}
	r.refused(&RollbackConfig{To: 1, Time: t0}, CodeInvalid)
}

func TestWatchWakesOnRestore(t *testing.T) {
	src := runScript(t, script())
	h := newHarness(t)
	ch := h.s.Watch()
	if err := h.s.Restore(strings.NewReader(persist(t, src.s))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Error("restore did not wake the watchers")
	}
}

// TestConcurrentReaders runs readers against a writer; run it with -race.
// Each reader checks that a view is consistent: every verdict and runtime
// state names a server of the view's own config.
func TestConcurrentReaders(t *testing.T) {
	h := newHarness(t)
	h.join("lb1", "lb2")
	h.ok(&ApplyConfig{YAML: docV2, Time: t0})
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				ch := h.s.Watch()
				v := h.s.View()
				keys := map[string]bool{}
				for _, k := range v.Servers() {
					keys[k] = true
				}
				for k := range v.Verdicts() {
					if !keys[k] {
						errs <- fmt.Errorf("verdict for %s, not in config version %d", k, len(v.History()))
						return
					}
				}
				for k := range v.ServerStates() {
					if !keys[k] {
						errs <- fmt.Errorf("state for %s, not in the config", k)
						return
					}
				}
				_, _ = v.Current()
				_ = v.Views()
				_ = v.Nodes()
				_, _ = v.Diff(1, 2)
				_ = h.s.Revoked("abc")
				_ = v.VerdictChanges([]string{"lb1", "lb2"}, PolicyAny)
				select {
				case <-ch:
				case <-done:
					return
				}
			}
		})
	}
	// Persist concurrently with Apply, as raft does.
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			sn, _ := h.s.Snapshot()
			var buf bytes.Buffer
			if err := sn.Persist(&buf); err != nil {
				errs <- err
				return
			}
			sn.Release()
		}
	})
	docs := []string{docV1, docV2, docV3}
	for i := range 300 {
		h.ok(&ApplyConfig{YAML: docs[i%3], Time: t0})
		h.ok(&SetServerAdmin{Backend: "app", Server: "app1", Admin: []Admin{AdminDrain, AdminReady}[i%2]})
		h.ok(&HealthView{Node: "lb1", Seq: uint64(i + 1), Servers: map[string]bool{"app/app1": i%2 == 0}})
		h.ok(&SetVerdicts{Verdicts: map[string]bool{"app/app1": i%3 == 0}})
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
