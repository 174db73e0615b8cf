package balance

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Consistent-hash ring sizing. A server gets Weight*k points on the ring,
// where k is pointsPerWeight unless the backend's total weight would then
// exceed ringBudget points, in which case k shrinks (down to 1) to fit. With
// the default weight of 1, k stays at pointsPerWeight for up to 256 servers,
// so adding or removing a server changes no other server's points.
const (
	pointsPerWeight = 160
	ringBudget      = 160 * 256
)

type keyKind uint8

const (
	keySource keyKind = iota
	keyURI
	keyURLParam
	keyHdr
)

// hashed implements source, uri, url_param and hdr: it hashes the request's
// key with hashKey (deterministic: the same on every node and across
// restarts) and maps it onto a server, map-based or consistent. A request
// without a key is balanced round-robin.
//
// Both hash types are static here: the map and the ring are laid out from the
// configured weights and a change of current weight does not move keys, but a
// server whose current weight is 0 is treated exactly like an unusable one
// (left out of the map's usable set, its ring points passed over). The
// key-less round-robin uses the configured weights too.
type hashed struct {
	g     *groups
	kind  keyKind
	param string
	rings *[2]ring // nil for map-based
	rr    *smoothRR
}

func newHashed(b state.Balance, hashType string, g *groups) (*hashed, error) {
	h := &hashed{g: g, param: b.Param, rr: newSmoothRR(g)}
	switch b.Algorithm {
	case state.BalanceSource:
		h.kind = keySource
	case state.BalanceURI:
		h.kind = keyURI
	case state.BalanceURLParam:
		h.kind = keyURLParam
	case state.BalanceHdr:
		h.kind = keyHdr
	}
	if (h.kind == keyURLParam || h.kind == keyHdr) && b.Param == "" {
		return nil, fmt.Errorf("balance: %s needs a name", b.Algorithm)
	}
	switch hashType {
	case HashMapBased:
	case HashConsistent:
		seen := make(map[string]bool, len(g.servers))
		for i, s := range g.servers {
			if s.Name == "" {
				return nil, fmt.Errorf("balance: consistent hashing needs server names; server %d has none", i)
			}
			if seen[s.Name] {
				return nil, fmt.Errorf("balance: consistent hashing needs unique server names; %q repeats", s.Name)
			}
			seen[s.Name] = true
		}
		h.rings = buildRings(g)
	default:
		return nil, fmt.Errorf("balance: unknown hash type %q (want %s or %s)", hashType, HashMapBased, HashConsistent)
	}
	return h, nil
}

func (b *hashed) Pick(req *Request, load Load, skip int) int {
	key, ok := b.key(req)
	if !ok {
		return b.rr.Pick(req, load, skip)
	}
	grp, skip := b.g.active(load, skip)
	if grp < 0 {
		return -1
	}
	if b.rings != nil {
		return b.rings[grp].lookup(key, b.g, load, skip)
	}
	return b.mapBased(key, grp, load, skip)
}

// key returns the hash of the request's key, or false if it has none.
func (b *hashed) key(req *Request) (uint64, bool) {
	if req == nil {
		return 0, false
	}
	switch b.kind {
	case keySource:
		a := req.Source.Unmap()
		if a.Is4() {
			v := a.As4()
			return hashKey(v[:]), true
		}
		if a.Is6() {
			v := a.As16()
			return hashKey(v[:]), true
		}
	case keyURI:
		if len(req.Path) > 0 {
			return hashKey(req.Path), true
		}
	case keyURLParam:
		if v := queryParam(req.Query, b.param); len(v) > 0 {
			return hashKey(v), true
		}
	case keyHdr:
		if req.Header != nil {
			if v := req.Header(b.param); len(v) > 0 {
				return hashKey(v), true
			}
		}
	}
	return 0, false
}

// queryParam returns the value of the first name=value pair of q (pairs
// separated by '&') whose name is exactly name, or nil.
func queryParam(q []byte, name string) []byte {
	for len(q) > 0 {
		part := q
		if j := bytes.IndexByte(q, '&'); j >= 0 {
			part, q = q[:j], q[j+1:]
		} else {
			q = nil
		}
		if eq := bytes.IndexByte(part, '='); eq >= 0 && string(part[:eq]) == name {
			return part[eq+1:]
		}
	}
	return nil
}

// mapBased maps key modulo the total configured weight of the usable servers
// (current weight not 0) of group grp onto them, each owning a run of Weight
// slots in configuration order.
// As in HAProxy, a change of the usable set remaps many keys. If the owner is
// skip, the next usable server in order takes the key.
func (b *hashed) mapBased(key uint64, grp int, load Load, skip int) int {
	members := b.g.members[grp]
	var total uint64
	for _, i := range members {
		total += uint64(b.g.weight(load, int(i)))
	}
	if total == 0 {
		return b.g.fallback(load, skip)
	}
	r := key % total
	n := len(members)
	for k, i := range members {
		w := uint64(b.g.weight(load, int(i)))
		if w == 0 {
			continue
		}
		if r >= w {
			r -= w
			continue
		}
		if int(i) != skip {
			return int(i)
		}
		for step := 1; step < n; step++ {
			j := members[(k+step)%n]
			if int(j) != skip && b.g.up(load, int(j)) {
				return int(j)
			}
		}
		break
	}
	return b.g.fallback(load, skip)
}

// ring is a consistent-hash ring: points sorted by hash, each owned by a
// server index.
type ring struct {
	hashes []uint64
	owners []int32
}

func buildRings(g *groups) *[2]ring {
	var sum int
	for _, members := range g.members {
		for _, i := range members {
			sum += g.servers[i].Weight
		}
	}
	k := pointsPerWeight
	if sum > 0 && sum*k > ringBudget {
		k = max(1, ringBudget/sum)
	}
	var rings [2]ring
	for grp, members := range g.members {
		rings[grp] = buildRing(g.servers, members, k)
	}
	return &rings
}

type point struct {
	hash  uint64
	owner int32
}

func buildRing(servers []Server, members []int32, k int) ring {
	var pts []point
	for _, i := range members {
		for j := range servers[i].Weight * k {
			pts = append(pts, point{pointHash(servers[i].Name, j), i})
		}
	}
	// Equal hashes are ordered by name so the ring does not depend on the
	// order of the servers in the configuration.
	slices.SortFunc(pts, func(a, b point) int {
		return cmp.Or(cmp.Compare(a.hash, b.hash), strings.Compare(servers[a.owner].Name, servers[b.owner].Name))
	})
	r := ring{hashes: make([]uint64, len(pts)), owners: make([]int32, len(pts))}
	for n, p := range pts {
		r.hashes[n], r.owners[n] = p.hash, p.owner
	}
	return r
}

// pointHash is the position of point j of the server called name.
func pointHash(name string, j int) uint64 {
	h := fnv1aString(fnvOffset, name)
	var b [5]byte // a 0 separator, then j
	binary.LittleEndian.PutUint32(b[1:], uint32(j))
	return mix64(fnv1a(h, b[:]))
}

// lookup walks clockwise from key to the first point whose server is usable,
// at a current weight above 0, and not skip.
func (r *ring) lookup(key uint64, g *groups, load Load, skip int) int {
	n := len(r.hashes)
	pos, _ := slices.BinarySearch(r.hashes, key)
	for range n {
		if pos == n {
			pos = 0
		}
		i := int(r.owners[pos])
		if i != skip && g.up(load, i) {
			return i
		}
		pos++
	}
	return g.fallback(load, skip)
}

// FNV-1a, 64 bits.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

// hashKey is the deterministic hash of a balancing key: FNV-1a 64 followed by
// a final avalanche mix, so that nearby keys spread over the ring and modulo
// small totals.
func hashKey(b []byte) uint64 { return mix64(fnv1a(fnvOffset, b)) }

func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnv1aString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the finalizer of MurmurHash3 (fmix64).
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9a34e17b1a3
	h ^= h >> 33
	return h
}
