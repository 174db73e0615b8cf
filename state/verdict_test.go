package state

import (
	"fmt"
	"reflect"
	"testing"
)

// obs is one node's observation of a server in the tables below.
type obs int

const (
	none obs = iota // no view of the server
	up
	down
)

func (o obs) String() string { return [...]string{"-", "UP", "DOWN"}[o] }

// viewsOf builds views of server "app/a" from one observation per node.
func viewsOf(nodes []string, o []obs) map[string]map[string]bool {
	views := map[string]map[string]bool{}
	for i, n := range nodes {
		switch o[i] {
		case up:
			views[n] = map[string]bool{"app/a": true}
		case down:
			views[n] = map[string]bool{"app/a": false}
		default:
			views[n] = map[string]bool{"app/other": true} // a view without the server
		}
	}
	return views
}

func verdictOf(m map[string]bool, key string) obs {
	v, ok := m[key]
	switch {
	case !ok:
		return none
	case v:
		return up
	}
	return down
}

func TestComputeVerdictsGolden(t *testing.T) {
	nodes := []string{"lb1", "lb2", "lb3", "dead"}
	live := []string{"lb1", "lb2", "lb3"}
	for _, tc := range []struct {
		name   string
		policy VerdictPolicy
		live   []string
		views  []obs // lb1, lb2, lb3, dead
		prev   obs
		want   obs
	}{
		{"all see it up", PolicyMajority, live, []obs{up, up, up, none}, none, up},
		{"two of three see it down", PolicyMajority, live, []obs{down, up, down, none}, up, down},
		{"two of three see it up", PolicyMajority, live, []obs{up, up, down, none}, down, up},
		{"one of three reports: its view", PolicyMajority, live, []obs{none, down, none, none}, up, down},
		{"tie keeps UP", PolicyMajority, live, []obs{up, down, none, none}, up, up},
		{"tie keeps DOWN", PolicyMajority, live, []obs{up, down, none, none}, down, down},
		{"tie on a server never judged: no verdict", PolicyMajority, live, []obs{up, down, none, none}, none, none},
		{"no reports keep the verdict", PolicyMajority, live, []obs{none, none, none, none}, down, down},
		{"no reports, never judged: no verdict", PolicyMajority, live, []obs{none, none, none, none}, none, none},
		{"a dead node's view is ignored", PolicyMajority, live, []obs{up, none, none, down}, up, up},
		{"only a dead node reports", PolicyMajority, live, []obs{none, none, none, down}, up, up},
		{"a node not live is not counted", PolicyMajority, []string{"lb1"}, []obs{down, up, up, none}, up, down},
		{"a voter listed twice counts once", PolicyMajority, []string{"lb1", "lb1", "lb2"}, []obs{down, up, none, none}, up, up},
		{"default policy is majority", "", live, []obs{down, down, up, none}, up, down},
		{"unknown policy is majority", "most", live, []obs{down, down, up, none}, up, down},
		{"any: one up is enough", PolicyAny, live, []obs{down, up, down, none}, down, up},
		{"any: all down", PolicyAny, live, []obs{down, down, down, none}, up, down},
		{"any: no reports keep the verdict", PolicyAny, live, []obs{none, none, none, up}, down, down},
		{"all: one down is enough", PolicyAll, live, []obs{up, up, down, none}, up, down},
		{"all: every reporter up", PolicyAll, live, []obs{up, none, up, none}, down, up},
		{"nobody live", PolicyMajority, nil, []obs{down, down, down, down}, up, up},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := map[string]bool{}
			if tc.prev != none {
				prev["app/a"] = tc.prev == up
			}
			got := ComputeVerdicts([]string{"app/a"}, viewsOf(nodes, tc.views), tc.live, tc.policy, prev)
			if g := verdictOf(got, "app/a"); g != tc.want {
				t.Errorf("verdict %v, want %v", g, tc.want)
			}
			if len(got) > 1 {
				t.Errorf("extra verdicts %v", got)
			}
		})
	}
}

// spec is the rule as the issue states it, written independently of
// ComputeVerdicts: fractions of reporters rather than counts compared.
func spec(reports []bool, prev obs, policy VerdictPolicy) obs {
	if len(reports) == 0 {
		return prev
	}
	ups := 0
	for _, r := range reports {
		if r {
			ups++
		}
	}
	b := func(v bool) obs {
		if v {
			return up
		}
		return down
	}
	switch policy {
	case PolicyAny:
		return b(ups >= 1)
	case PolicyAll:
		return b(ups == len(reports))
	}
	switch {
	case 2*ups > len(reports):
		return up
	case 2*(len(reports)-ups) > len(reports):
		return down
	}
	return prev
}

// TestComputeVerdictsEveryInput runs every combination of three live
// voters' and one dead node's observations, previous verdicts and policies
// against the spec.
func TestComputeVerdictsEveryInput(t *testing.T) {
	nodes := []string{"lb1", "lb2", "lb3", "dead"}
	live := []string{"lb3", "lb1", "lb2"}
	all := []obs{none, up, down}
	n := 0
	for _, policy := range []VerdictPolicy{"", PolicyMajority, PolicyAny, PolicyAll} {
		for _, prev := range all {
			for _, o1 := range all {
				for _, o2 := range all {
					for _, o3 := range all {
						for _, o4 := range all {
							o := []obs{o1, o2, o3, o4}
							var reports []bool
							for _, x := range o[:3] {
								if x != none {
									reports = append(reports, x == up)
								}
							}
							prevMap := map[string]bool{"gone/x": true}
							if prev != none {
								prevMap["app/a"] = prev == up
							}
							got := ComputeVerdicts([]string{"app/a"}, viewsOf(nodes, o), live, policy, prevMap)
							want := spec(reports, prev, policy)
							if g := verdictOf(got, "app/a"); g != want {
								t.Errorf("policy %q prev %v views %v: got %v, want %v", policy, prev, o, g, want)
							}
							if _, leaked := got["gone/x"]; leaked {
								t.Fatal("a server not in the list got a verdict")
							}
							n++
						}
					}
				}
			}
		}
	}
	if n != 4*3*81 {
		t.Fatalf("ran %d cases", n)
	}
}

func TestComputeVerdictsManyServers(t *testing.T) {
	views := map[string]map[string]bool{
		"lb1": {"a/1": true, "a/2": false, "b/1": true},
		"lb2": {"a/1": true, "a/2": false, "b/1": false},
		"lb3": {"a/1": false, "a/2": false},
	}
	got := ComputeVerdicts([]string{"a/1", "a/2", "b/1", "b/2"}, views, []string{"lb1", "lb2", "lb3"}, PolicyMajority, map[string]bool{"b/1": false, "b/2": true})
	want := map[string]bool{"a/1": true, "a/2": false, "b/1": false, "b/2": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseVerdictPolicy(t *testing.T) {
	for in, want := range map[string]VerdictPolicy{"": PolicyMajority, "majority": PolicyMajority, "any": PolicyAny, "all": PolicyAll} {
		if got, err := ParseVerdictPolicy(in); got != want || err != nil {
			t.Errorf("ParseVerdictPolicy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseVerdictPolicy("Majority"); err == nil {
		t.Error("Majority accepted")
	}
}

func TestDisagreements(t *testing.T) {
	verdicts := map[string]bool{"app/app1": true, "app/app2": false, "app/app3": true}
	views := map[string]map[string]bool{
		"lb1":  {"app/app1": true, "app/app2": true, "app/app3": true, "app/new": false},
		"lb2":  {"app/app1": false, "app/app2": false},
		"dead": {"app/app1": false},
	}
	got := Disagreements(verdicts, views, []string{"lb2", "lb1", "lb3"})
	var lines []string
	for _, d := range got {
		lines = append(lines, d.String())
	}
	want := []string{"lb2 sees app/app1 DOWN (verdict UP)", "lb1 sees app/app2 UP (verdict DOWN)"}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", lines, want)
	}
	if d := Disagreements(verdicts, views, nil); d != nil {
		t.Errorf("no nodes: %v", d)
	}
}
