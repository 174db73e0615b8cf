package state

import (
	"fmt"
	"slices"
	"strings"
)

// VerdictPolicy is how the nodes' views of a server become the cluster's
// verdict.
type VerdictPolicy string

// The policies.
const (
	// PolicyMajority (the default): UP when more reporting live voters see
	// the server UP than DOWN, DOWN when more see it DOWN; a tie keeps the
	// previous verdict.
	PolicyMajority VerdictPolicy = "majority"
	// PolicyAny: UP when any reporting live voter sees it UP.
	PolicyAny VerdictPolicy = "any"
	// PolicyAll: UP only when every reporting live voter sees it UP.
	PolicyAll VerdictPolicy = "all"
)

// ParseVerdictPolicy parses a policy name; "" is the default, majority.
func ParseVerdictPolicy(s string) (VerdictPolicy, error) {
	switch p := VerdictPolicy(s); p {
	case "":
		return PolicyMajority, nil
	case PolicyMajority, PolicyAny, PolicyAll:
		return p, nil
	}
	return "", fmt.Errorf("unknown verdict policy %q (want majority, any or all)", s)
}

// ComputeVerdicts decides the health verdict of each server, keyed as in
// servers (ServerKey), true for UP. It is a pure function: the leader calls
// it with the views the store holds and the live voters it sees, and
// commits the result.
//
// Only the views of live voters count, and of those only the voters whose
// view has the server (the reporters): a dead node's view is stale, and a
// witness checks nothing. With reporters, policy decides (majority, the
// default for "" and for a name ParseVerdictPolicy would refuse; any; all);
// a majority tie keeps the previous verdict.
//
// Without reporters, the previous verdict stands. A server that has neither
// reporters nor a previous verdict gets no entry at all rather than an
// invented UP or DOWN: "not judged by the cluster", for which the data
// plane uses its own observation, which starts from the server's
// init_state (and is UP for a server without checks). Servers not in
// servers get no entry, whatever previous holds.
func ComputeVerdicts(servers []string, views map[string]map[string]bool, liveVoters []string, policy VerdictPolicy, previous map[string]bool) map[string]bool {
	voters := slices.Clone(liveVoters)
	slices.Sort(voters)
	voters = slices.Compact(voters)
	out := make(map[string]bool, len(servers))
	for _, s := range servers {
		up, down := 0, 0
		for _, n := range voters {
			seen, reported := views[n][s]
			switch {
			case !reported:
			case seen:
				up++
			default:
				down++
			}
		}
		prev, judged := previous[s]
		if up+down == 0 {
			if judged {
				out[s] = prev
			}
			continue
		}
		switch policy {
		case PolicyAny:
			out[s] = up > 0
		case PolicyAll:
			out[s] = down == 0
		default:
			switch {
			case up > down:
				out[s] = true
			case down > up:
				out[s] = false
			case judged:
				out[s] = prev
			}
			// A tie on a server never judged leaves it unjudged.
		}
	}
	return out
}

// Disagreement is a live voter whose own view of a server contradicts the
// committed verdict: that node avoids the server locally (when it sees it
// DOWN) and status names it.
type Disagreement struct {
	Node    string `json:"node"`
	Server  string `json:"server"`
	Sees    bool   `json:"sees_up"`
	Verdict bool   `json:"verdict_up"`
}

func (d Disagreement) String() string {
	return fmt.Sprintf("%s sees %s %s (verdict %s)", d.Node, d.Server, upDown(d.Sees), upDown(d.Verdict))
}

func upDown(up bool) string {
	if up {
		return "UP"
	}
	return "DOWN"
}

// Disagreements lists, for every server with a verdict, the nodes among
// nodes whose view says otherwise, sorted by server then node.
func Disagreements(verdicts map[string]bool, views map[string]map[string]bool, nodes []string) []Disagreement {
	ns := slices.Clone(nodes)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	var out []Disagreement
	for _, n := range ns {
		for s, seen := range views[n] {
			if v, judged := verdicts[s]; judged && v != seen {
				out = append(out, Disagreement{Node: n, Server: s, Sees: seen, Verdict: v})
			}
		}
	}
	slices.SortFunc(out, func(a, b Disagreement) int {
		if c := strings.Compare(a.Server, b.Server); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	return out
}
