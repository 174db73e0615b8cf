// Package balance implements HAProxy's balance algorithms (roundrobin,
// static-rr, leastconn, first, source, uri, url_param, hdr and random) for
// the proxy's hot path.
//
// A Balancer is built once per backend from the parsed `balance` value and a
// fixed list of servers; the live state of the servers (usable or not, their
// current weight, how many requests each carries) is read on every Pick
// through the Load interface, which the proxy implements with atomics. Pick
// does not allocate.
//
// Weights. Server.Weight is the configured weight; Load.Weight is the current
// effective weight (slowstart, agent check, operator's `weight N`). As in
// HAProxy, the algorithms are either dynamic or static:
//   - roundrobin, leastconn, random and first are dynamic: they balance with
//     the current weights, read at pick time. A server configured with weight
//     0 takes part as soon as its current weight is raised above 0.
//   - static-rr and the map-based and consistent hashes are static: the
//     distribution (sequence, map, ring) is built once from the configured
//     weights and a change of current weight does not alter it, except that a
//     server whose current weight is 0 is skipped exactly as if it were not
//     usable. A server configured with weight 0 never takes part.
//
// Common rules, as in HAProxy:
//   - A server whose weight (current, or configured for the static
//     algorithms) is 0 is never picked and counts as unusable, as in
//     HAProxy's srv_currently_usable(), which requires a non-zero effective
//     weight: it is UP but receives no new traffic.
//   - Backup servers are used only when no non-backup server is usable. Since
//     a weight-0 primary is not usable, the backups take over when every
//     remaining primary is at weight 0 (all drained by the agent or the
//     operator, say), as HAProxy's backend does (its active-server count,
//     srv_act, only counts servers with a non-zero weight). With no usable
//     backup either, Pick returns -1 (HAProxy answers 503).
//   - The skip server (redispatch after a failed connect) is avoided when
//     another usable server of the same group exists. As in HAProxy, skipping
//     the last usable primary does not switch to the backups: the skipped
//     server is returned again.
package balance

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/fulcrum-lb/fulcrum/state"
)

// MaxWeight is the largest server weight, as in HAProxy.
const MaxWeight = 256

// Server is the balancer's fixed view of one server of a backend. Its index
// is its position in the slice passed to New.
type Server struct {
	// Name is the server's stable identity; consistent hashing keys on it,
	// not on the index, so reordering servers does not move keys.
	Name string
	// Weight is the configured weight, 0..MaxWeight. The static algorithms
	// balance with it; 0 means never picked by them, and not picked by the
	// dynamic ones until Load.Weight raises it.
	Weight int
	// Backup servers are used only when no non-backup server is usable.
	Backup bool
	// MaxConn is the server's connection limit, 0 for unlimited; the "first"
	// algorithm fills a server up to it before using the next one.
	MaxConn int
}

// Load is the live state of the servers, indexed like the slice passed to
// New. The proxy implements it with atomics; its methods must be cheap and
// safe for concurrent use.
type Load interface {
	// Usable reports whether server i is up and not in maintenance or drain.
	Usable(i int) bool
	// Weight is the server's current effective weight (0..256): its configured
	// weight scaled by slowstart, agent or operator. 0 means no new traffic.
	// A value above MaxWeight counts as MaxWeight, a negative one as 0. It is
	// only called for usable servers.
	Weight(i int) int
	// Active is the number of requests currently assigned to server i (in
	// flight plus queued on it).
	Active(i int) int64
}

// Request carries what the hash-based algorithms need. Any field may be
// zero; an algorithm whose key is missing falls back to round-robin.
type Request struct {
	Source netip.Addr // client address (balance source)
	Path   []byte     // request target up to, not including, '?' (balance uri)
	Query  []byte     // the part after '?' (balance url_param)
	// Header returns the value of a request header, or nil (balance hdr).
	// It is not called when nil.
	Header func(name string) []byte
}

// Balancer chooses a server for a request.
type Balancer interface {
	// Pick returns the index of the chosen server, or -1 when no server is
	// usable. skip, when >= 0, is a server index the caller wants avoided
	// (redispatch after a failed connect); it is honoured if any other
	// usable server of the same group (primary or backup) exists. req may be
	// nil for algorithms that do not hash. Pick is safe for concurrent use.
	Pick(req *Request, load Load, skip int) int
}

// Hash types, as in HAProxy's hash-type keyword.
const (
	HashMapBased   = "map-based"
	HashConsistent = "consistent"
)

// New builds the balancer for algorithm b over servers. hashType
// (HashMapBased or HashConsistent) is required for the hashing algorithms
// (source, uri, url_param, hdr) and ignored by the others. New applies no
// defaults: the config layer does.
func New(b state.Balance, hashType string, servers []Server) (Balancer, error) {
	if len(servers) > maxServers {
		return nil, fmt.Errorf("balance: %d servers, at most %d supported", len(servers), maxServers)
	}
	for i, s := range servers {
		if s.Weight < 0 || s.Weight > MaxWeight {
			return nil, fmt.Errorf("balance: server %d (%q): weight %d not in 0..%d", i, s.Name, s.Weight, MaxWeight)
		}
		if s.MaxConn < 0 {
			return nil, fmt.Errorf("balance: server %d (%q): negative maxconn %d", i, s.Name, s.MaxConn)
		}
	}
	switch b.Algorithm {
	case state.BalanceRoundRobin:
		return newSmoothRR(newGroups(servers, true)), nil
	case state.BalanceStaticRR:
		return newStaticRR(newGroups(servers, false)), nil
	case state.BalanceLeastConn:
		return &leastConn{g: newGroups(servers, true)}, nil
	case state.BalanceFirst:
		return &first{g: newGroups(servers, true)}, nil
	case state.BalanceRandom:
		if b.Draws < 1 {
			return nil, fmt.Errorf("balance: random needs at least 1 draw, got %d", b.Draws)
		}
		return &random{g: newGroups(servers, true), draws: b.Draws}, nil
	case state.BalanceSource, state.BalanceURI, state.BalanceURLParam, state.BalanceHdr:
		return newHashed(b, hashType, newGroups(servers, false))
	case "":
		return nil, errors.New("balance: no algorithm")
	}
	return nil, fmt.Errorf("balance: unknown algorithm %q", b.Algorithm)
}

// maxServers bounds the server count so indices fit the int32 tables.
const maxServers = 1 << 20

// Group indices.
const (
	groupPrimary = 0
	groupBackup  = 1
)

// groups is the fixed partition of the servers shared by all algorithms.
type groups struct {
	servers []Server
	// dynamic: the algorithm balances with the current weights (Load.Weight)
	// and every server is a member; otherwise it balances with the configured
	// weights, and servers configured with weight 0 are left out.
	dynamic bool
	// members[groupPrimary] and members[groupBackup] list, in order, the
	// indices of the servers that may be picked in each group.
	members [2][]int32
}

func newGroups(servers []Server, dynamic bool) *groups {
	g := &groups{servers: append([]Server(nil), servers...), dynamic: dynamic}
	for i, s := range g.servers {
		if s.Weight == 0 && !dynamic {
			continue
		}
		grp := groupPrimary
		if s.Backup {
			grp = groupBackup
		}
		g.members[grp] = append(g.members[grp], int32(i))
	}
	return g
}

// weight is the weight server i is balanced with now: 0 if it is not usable
// or its current weight is 0 (or, for a static algorithm, its configured
// weight is 0); otherwise its current weight, capped at MaxWeight, for a
// dynamic algorithm and its configured weight for a static one.
func (g *groups) weight(load Load, i int) int {
	if !load.Usable(i) {
		return 0
	}
	w := load.Weight(i)
	switch {
	case w <= 0:
		return 0
	case !g.dynamic:
		return g.servers[i].Weight
	}
	return min(w, MaxWeight)
}

// up reports whether server i may be picked now (weight(i) > 0).
func (g *groups) up(load Load, i int) bool { return g.weight(load, i) > 0 }

// active returns the group to balance over (-1 when no server is usable) and
// the skip to honour: -1 unless skip is usable in that group and another
// usable member exists. It stops at the first usable member other than skip,
// so in the usual case it costs one or two Usable and Weight calls.
//
// "Usable" includes a non-zero weight, as in HAProxy: a primary that is UP
// but at weight 0 does not hold the backups off, so when every primary is
// down or at weight 0 the backups serve; -1 only when no backup is usable
// either.
func (g *groups) active(load Load, skip int) (grp, honour int) {
	for grp := range g.members {
		skipUsable := false
		for _, i := range g.members[grp] {
			if !g.up(load, int(i)) {
				continue
			}
			if int(i) != skip {
				return grp, skip
			}
			skipUsable = true
		}
		if skipUsable {
			return grp, -1
		}
	}
	return -1, -1
}

// fallback is what an algorithm returns when its scan found nothing (the
// usable set changed under it): skip if still usable, else -1.
func (g *groups) fallback(load Load, skip int) int {
	if skip >= 0 && skip < len(g.servers) && g.up(load, skip) {
		return skip
	}
	return -1
}
