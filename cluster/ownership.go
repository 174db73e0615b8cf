package cluster

import (
	"cmp"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// OwnershipInput is everything one node knows, at one instant, that decides
// whether it should hold the VIP. The caller gathers it (Raft, gossip, the
// proxy, a tiebreaker probe); DecideOwnership only reads it.
type OwnershipInput struct {
	// Self is this node's name.
	Self string
	// Mode is the vip mode: active-passive, active-active or none.
	Mode string
	// WithoutQuorum is the rule while there is no quorum, release or
	// tiebreaker: auto is resolved by the caller (state.VIP.WithoutQuorumRule).
	WithoutQuorum string
	// Voters is the number of Raft voters (informational: the rule is
	// already resolved).
	Voters int
	// Quorum: this node sees a leader with quorum.
	Quorum bool
	// Leader is the current Raft leader ("" when none is known).
	Leader string
	// LeaseOK: this node is the leader and its lease holds, checked just now.
	LeaseOK bool
	// BarrierDone: the leader's state is current (a Barrier completed in
	// its term).
	BarrierDone bool
	// Fit: this node's proxy is fit (listeners up, not draining). A witness
	// is never fit.
	Fit bool
	// Holding: this node holds the VIP now.
	Holding bool
	// HolderDead: gossip declared the current holder dead (tiebreaker
	// rule). On the holder itself it means that the cluster declared this
	// node dead, so that the others are entitled to claim.
	HolderDead bool
	// TiebreakerAnswers: the tiebreaker address answers from this node.
	TiebreakerAnswers bool
	// ForcedClaim: an operator ran `fulcrum vip claim --force` here.
	ForcedClaim bool
}

// OwnershipDecision is what a node should do with the VIP.
type OwnershipDecision struct {
	// Hold: hold (and announce) the VIP; false: release it.
	Hold bool
	// Reason explains the decision for the log and `cluster status`.
	Reason string
	// Degraded: the decision was taken without quorum (the no-quorum rule,
	// or active-active announcing while the cluster has lost quorum).
	Degraded bool
}

// DecideOwnership is the one rule that decides whether a node holds the VIP.
// It is pure: no I/O, no clock, the same answer for the same input.
//
// Active-passive with quorum: the leader holds, once its lease holds, its
// state is current and its proxy is fit (an unfit leader does not hold; the
// caller transfers leadership to a fit node). Without quorum, release: only
// a forced claim holds; tiebreaker: while the tiebreaker answers, the holder
// keeps the VIP and a non-holder claims it once gossip declared the holder
// dead (a holder that learns it was declared dead itself releases, since the
// others may now claim). Active-active: every fit node announces, whatever
// the quorum. None: nobody holds. An unfit node never holds, and an unknown
// mode or rule holds nothing.
func DecideOwnership(in OwnershipInput) OwnershipDecision {
	switch in.Mode {
	case state.VIPModeNone:
		return OwnershipDecision{Reason: "vip mode is none"}
	case state.VIPModeActiveActive:
		d := OwnershipDecision{Degraded: !in.Quorum}
		if !in.Fit {
			d.Reason = "proxy unfit or draining: routes withdrawn"
			return d
		}
		d.Hold = true
		d.Reason = "proxy fit: announcing"
		if !in.Quorum {
			d.Reason += " (cluster without quorum)"
		}
		return d
	case state.VIPModeActivePassive:
		if in.Self == "" {
			return OwnershipDecision{Reason: "node has no name"}
		}
		if in.Quorum {
			return decideWithQuorum(in)
		}
		return decideWithoutQuorum(in)
	}
	return OwnershipDecision{Reason: "unknown vip mode " + quote(in.Mode)}
}

func decideWithQuorum(in OwnershipInput) OwnershipDecision {
	switch {
	case in.Leader == "":
		return OwnershipDecision{Reason: "no leader known"}
	case in.Leader != in.Self:
		return OwnershipDecision{Reason: "following leader " + in.Leader}
	case !in.LeaseOK:
		return OwnershipDecision{Reason: "leader lease does not hold"}
	case !in.BarrierDone:
		return OwnershipDecision{Reason: "leader waiting for its state to be current (barrier)"}
	case !in.Fit:
		return OwnershipDecision{Reason: "leader unfit or draining: leadership to be transferred"}
	}
	return OwnershipDecision{Hold: true, Reason: "leader with quorum"}
}

func decideWithoutQuorum(in OwnershipInput) OwnershipDecision {
	d := OwnershipDecision{Degraded: true}
	switch in.WithoutQuorum {
	case state.WithoutQuorumRelease:
		switch {
		case !in.ForcedClaim:
			d.Reason = "no quorum: released (without_quorum release)"
		case !in.Fit:
			d.Reason = "no quorum: forced claim refused, proxy unfit or draining"
		default:
			d.Hold, d.Reason = true, "no quorum: held by forced claim"
		}
	case state.WithoutQuorumTiebreaker:
		switch {
		case !in.TiebreakerAnswers:
			d.Reason = "no quorum: released, tiebreaker does not answer"
		case !in.Fit:
			d.Reason = "no quorum: released, proxy unfit or draining"
		case in.Holding && in.HolderDead:
			d.Reason = "no quorum: released, the cluster declared this node dead"
		case in.Holding:
			d.Hold, d.Reason = true, "no quorum: kept, tiebreaker answers"
		case in.HolderDead:
			d.Hold, d.Reason = true, "no quorum: claimed, holder declared dead and tiebreaker answers"
		default:
			d.Reason = "no quorum: not claimed, the holder is not declared dead"
		}
	default:
		d.Reason = "no quorum: released, unknown rule " + quote(in.WithoutQuorum)
	}
	return d
}

func quote(s string) string { return `"` + s + `"` }

// Candidate is a node that could own the VIP, as gossip shows it.
type Candidate struct {
	Name     string
	Priority int
	// Fit: the node's proxy is fit (a witness never is).
	Fit bool
	// HealthySince is when the node last became fit (zero: unknown).
	HealthySince time.Time
}

// PreferredOwner returns the node that should own the VIP (the node to hand
// leadership to), or "" when no node is fit. It is the fit node with the
// highest priority, ties broken by the smaller name; but while current is
// fit it stays the owner unless the preferred node has a strictly higher
// priority and has been fit for at least preemptDelay (0: never preempt), so
// that a node that comes back takes over once, and only once it is stable.
// It is pure: now is passed in.
func PreferredOwner(nodes []Candidate, current string, now time.Time, preemptDelay time.Duration) string {
	var best, cur *Candidate
	for i := range nodes {
		n := &nodes[i]
		if !n.Fit || n.Name == "" {
			continue
		}
		if n.Name == current && cur == nil {
			cur = n
		}
		if best == nil || better(n, best) {
			best = n
		}
	}
	switch {
	case best == nil:
		return ""
	case cur == nil || cur == best:
		return best.Name
	case best.Priority <= cur.Priority || preemptDelay <= 0 || best.HealthySince.IsZero():
		return cur.Name
	case now.Sub(best.HealthySince) >= preemptDelay:
		return best.Name
	}
	return cur.Name
}

// better reports whether a ranks before b: higher priority, then smaller
// name.
func better(a, b *Candidate) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return cmp.Less(a.Name, b.Name)
}
