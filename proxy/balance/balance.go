// Package balance implements HAProxy's balance algorithms (roundrobin,
// static-rr, leastconn, first, source, uri, url_param, hdr and random) for
// the proxy's hot path.
//
// A Balancer is built once per backend from the parsed `balance` value and a
// fixed list of servers; the live state of the servers (usable or not, how
// many requests each carries) is read on every Pick through the Load
// interface, which the proxy implements with atomics. Pick does not allocate.
//
// Common rules, as in HAProxy:
//   - A server with weight 0 is never picked and counts as unusable.
//   - Backup servers are used only when no non-backup server is usable; the
//     usable backups are then balanced with the same algorithm.
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
	// Weight is 0..MaxWeight; 0 means never picked.
	Weight int
	// Backup servers are used only when no non-backup server is usable.
	Backup bool
	// MaxConn is the server's connection limit, 0 for unlimited; the "first"
	// algorithm fills a server up to it before using the next one.
	MaxConn int
}

// Load is the live state of the servers, indexed like the slice passed to
// New. The proxy implements it with atomics; both methods must be cheap and
// safe for concurrent use.
type Load interface {
	// Usable reports whether server i is up and not in maintenance or drain.
	Usable(i int) bool
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
	g := newGroups(servers)
	switch b.Algorithm {
	case state.BalanceRoundRobin:
		return newSmoothRR(g), nil
	case state.BalanceStaticRR:
		return newStaticRR(g), nil
	case state.BalanceLeastConn:
		return &leastConn{g: g}, nil
	case state.BalanceFirst:
		return &first{g: g}, nil
	case state.BalanceRandom:
		if b.Draws < 1 {
			return nil, fmt.Errorf("balance: random needs at least 1 draw, got %d", b.Draws)
		}
		return &random{g: g, draws: b.Draws}, nil
	case state.BalanceSource, state.BalanceURI, state.BalanceURLParam, state.BalanceHdr:
		return newHashed(b, hashType, g)
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
	// members[groupPrimary] and members[groupBackup] list, in order, the
	// indices of the servers with a non-zero weight in each group.
	members [2][]int32
}

func newGroups(servers []Server) *groups {
	g := &groups{servers: append([]Server(nil), servers...)}
	for i, s := range g.servers {
		if s.Weight == 0 {
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

// active returns the group to balance over (-1 when no server is usable) and
// the skip to honour: -1 unless skip is usable in that group and another
// usable member exists. It stops at the first usable member other than skip,
// so in the usual case it costs one or two Usable calls.
func (g *groups) active(load Load, skip int) (grp, honour int) {
	for grp := range g.members {
		skipUsable := false
		for _, i := range g.members[grp] {
			if !load.Usable(int(i)) {
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
	if skip >= 0 && skip < len(g.servers) && g.servers[skip].Weight > 0 && load.Usable(skip) {
		return skip
	}
	return -1
}
