package balance

import (
	"sync"
	"sync/atomic"
)

// smoothRR is roundrobin: nginx's smooth weighted round-robin over the usable
// servers of the active group. Each pick adds every candidate's weight to its
// current value, takes the largest and subtracts the candidates' total from
// it, which interleaves the servers (weights 1:2:3 give C B A C B C).
type smoothRR struct {
	g   *groups
	mu  sync.Mutex
	cur []int64 // by server index; guarded by mu
}

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
	b.mu.Lock()
	for _, i := range b.g.members[grp] {
		if int(i) == skip || !load.Usable(int(i)) {
			continue
		}
		w := int64(b.g.servers[i].Weight)
		b.cur[i] += w
		total += w
		if best < 0 || b.cur[i] > b.cur[best] {
			best = int(i)
		}
	}
	if best >= 0 {
		b.cur[best] -= total
	}
	b.mu.Unlock()
	if best < 0 {
		return b.g.fallback(load, skip)
	}
	return best
}

// staticRR is static-rr: a fixed, precomputed interleaved sequence per group
// (the smooth round-robin order of the configured weights, reduced by their
// greatest common divisor) walked by an atomic cursor. An unusable or skipped
// entry passes to the next one in the sequence, so a pick is lock-free and
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
		if int(i) != skip && load.Usable(int(i)) {
			return int(i)
		}
		if pos++; pos == n {
			pos = 0
		}
	}
	return b.g.fallback(load, skip)
}
