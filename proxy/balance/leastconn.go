package balance

import "sync/atomic"

// leastConn is leastconn: the usable server with the lowest Active/Weight,
// compared as a*wb < b*wa, with the current weights (leastconn is dynamic). The scan starts at a rotating offset, so servers
// that tie share the load round-robin.
type leastConn struct {
	g    *groups
	next atomic.Uint64
}

func (b *leastConn) Pick(_ *Request, load Load, skip int) int {
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	members := b.g.members[grp]
	n := len(members)
	k := int((b.next.Add(1) - 1) % uint64(n))
	best := -1
	var bestActive, bestWeight int64
	for range n {
		i := int(members[k])
		if k++; k == n {
			k = 0
		}
		if i == skip {
			continue
		}
		w := int64(b.g.weight(load, i))
		if w == 0 {
			continue
		}
		a := load.Active(i)
		if best < 0 || a*bestWeight < bestActive*w {
			best, bestActive, bestWeight = i, a, w
		}
	}
	if best < 0 {
		return b.g.fallback(load, skip)
	}
	return best
}

// first is first: the first usable server (current weight not 0; the weight
// plays no other part), in configuration order, with
// fewer than MaxConn active requests (MaxConn 0 is unlimited); when all are
// full, the one with the fewest active requests.
type first struct {
	g *groups
}

func (b *first) Pick(_ *Request, load Load, skip int) int {
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	best := -1
	var bestActive int64
	for _, i := range b.g.members[grp] {
		if int(i) == skip || !b.g.up(load, int(i)) {
			continue
		}
		s := &b.g.servers[i]
		if s.MaxConn == 0 {
			return int(i)
		}
		a := load.Active(int(i))
		if a < int64(s.MaxConn) {
			return int(i)
		}
		if best < 0 || a < bestActive {
			best, bestActive = int(i), a
		}
	}
	if best < 0 {
		return b.g.fallback(load, skip)
	}
	return best
}
