package balance

import (
	"sync"
	"sync/atomic"
)

// smoothRR is roundrobin: nginx's smooth weighted round-robin over the usable
// servers of the active group. Each pick adds every candidate's weight to its
// current value, takes the largest and subtracts the candidates' total from
// it, which interleaves the servers (weights 1:2:3 give C B A C B C).
//
// The weights are read at pick time (the current weights for roundrobin, the
// configured ones for the key-less fallback of the static hashes), and the
// total is recomputed on every pick, so a weight change takes effect on the
// next pick with no rebuild. A pick adds exactly what it subtracts, so the sum
// of the current values over a group's members stays 0 whatever the weights
// do: a weight change shifts the proportions without any correction, a
// server that is down, skipped or at weight 0 keeps its value frozen until it
// is a candidate again (as in nginx), and a candidate of weight w gains w per
// pick until it is the largest, so none starves. After a change, values built
// up at the old weights are spent at the new ones: a one-off burst or pause
// of about |value|/total picks for a server, as in nginx. The values stay
// well within the group's largest possible total weight (seen in tests under
// random weight changes, downs and skips); as a guard against overflow
// whatever the sequence, they are reset to 0 should one ever leave
// ±rrLimit, which only restarts the interleaving.
type smoothRR struct {
	g   *groups
	mu  sync.Mutex
	cur []int64 // by server index; guarded by mu
}

// rrLimit bounds smoothRR's current values: far above anything a real
// sequence reaches (a group's total weight is below 2^29), far below
// overflow.
const rrLimit = 1 << 48

func newSmoothRR(g *groups) *smoothRR {
	return &smoothRR{g: g, cur: make([]int64, len(g.servers))}
}

func (b *smoothRR) Pick(_ *Request, load Load, skip int) int {
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	best := -1
	var total int64
	members := b.g.members[grp]
	b.mu.Lock()
	for _, i := range members {
		if int(i) == skip {
			continue
		}
		w := int64(b.g.weight(load, int(i)))
		if w == 0 {
			continue
		}
		b.cur[i] += w
		total += w
		if best < 0 || b.cur[i] > b.cur[best] {
			best = int(i)
		}
	}
	if best >= 0 {
		// The largest is at least the candidates' mean, so it bounds
		// them all from above; the one just lowered bounds them from
		// below until the next pick.
		if b.cur[best] > rrLimit || b.cur[best]-total < -rrLimit {
			for _, i := range members {
				b.cur[i] = 0
			}
		} else {
			b.cur[best] -= total
		}
	}
	b.mu.Unlock()
	if best < 0 {
		return b.g.fallback(load, skip)
	}
	return best
}

// staticRR is static-rr: a fixed, precomputed interleaved sequence per group
// (the smooth round-robin order of the configured weights, reduced by their
// greatest common divisor) walked by an atomic cursor. static-rr is static, as
// in HAProxy: the sequence keeps the configured weights whatever the current
// ones, but an entry whose server is unusable, at current weight 0, or
// skipped passes to the next one in the sequence, so a pick is lock-free and
// costs one step while all servers are usable; in the worst case (one usable
// server among many heavy ones) it walks the whole sequence, at most
// MaxWeight entries per server.
type staticRR struct {
	g    *groups
	seq  [2][]int32
	next atomic.Uint64
}

func newStaticRR(g *groups) *staticRR {
	b := &staticRR{g: g}
	for grp, members := range g.members {
		b.seq[grp] = interleave(g.servers, members)
	}
	return b
}

// interleave returns the smooth weighted round-robin order of members for one
// full cycle, with the weights divided by their greatest common divisor.
func interleave(servers []Server, members []int32) []int32 {
	d := 0
	for _, i := range members {
		d = gcd(d, servers[i].Weight)
	}
	var total int
	w := make([]int64, len(members))
	for k, i := range members {
		w[k] = int64(servers[i].Weight / d)
		total += int(w[k])
	}
	seq := make([]int32, 0, total)
	cur := make([]int64, len(members))
	for range total {
		best := 0
		for k := range members {
			cur[k] += w[k]
			if cur[k] > cur[best] {
				best = k
			}
		}
		cur[best] -= int64(total)
		seq = append(seq, members[best])
	}
	return seq
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (b *staticRR) Pick(_ *Request, load Load, skip int) int {
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	seq := b.seq[grp]
	n := uint64(len(seq))
	pos := (b.next.Add(1) - 1) % n
	for range n {
		i := seq[pos]
		if int(i) != skip && b.g.up(load, int(i)) {
			return int(i)
		}
		if pos++; pos == n {
			pos = 0
		}
	}
	return b.g.fallback(load, skip)
}
