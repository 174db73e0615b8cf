package balance

import "math/rand/v2"

// random is random(N): N random draws among the usable servers, weighted by
// their current weights (random is dynamic), of
// which the least loaded wins ("power of N choices"); random(1) is plain
// weighted random. As in HAProxy, "least loaded" compares Active/Weight, which
// for equal weights is the lowest Active. Ties keep the earlier draw. The
// draws use math/rand/v2's global generator, which is safe for concurrent use
// and does not lock.
type random struct {
	g     *groups
	draws int
}

func (b *random) Pick(_ *Request, load Load, skip int) int {
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	members := b.g.members[grp]
	var total uint64
	for _, i := range members {
		if int(i) != skip {
			total += uint64(b.g.weight(load, int(i)))
		}
	}
	if total == 0 {
		return b.g.fallback(load, skip)
	}
	best := -1
	var bestActive, bestWeight int64
	for range b.draws {
		i := b.draw(members, load, skip, rand.Uint64N(total))
		if i < 0 || i == best {
			continue
		}
		w := int64(b.g.weight(load, i))
		if w == 0 {
			continue // gone since the draw
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

// draw maps r, uniform in [0, total weight of the candidates), onto the
// candidate that owns it; -1 if the usable set or the weights shrank since
// the total was taken.
func (b *random) draw(members []int32, load Load, skip int, r uint64) int {
	for _, i := range members {
		if int(i) == skip {
			continue
		}
		w := uint64(b.g.weight(load, int(i)))
		if w == 0 {
			continue
		}
		if r < w {
			return int(i)
		}
		r -= w
	}
	return -1
}
