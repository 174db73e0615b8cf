package balance

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"testing"

	"github.com/fulcrum-lb/fulcrum/state"
)

func TestFNV1aMatchesStdlib(t *testing.T) {
	for _, s := range []string{"", "a", "/index.html", "user-12345", "\x00\xff"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := fnv1a(fnvOffset, []byte(s)), h.Sum64(); got != want {
			t.Errorf("fnv1a(%q) = %#x, want %#x", s, got, want)
		}
		if got, want := fnv1aString(fnvOffset, s), h.Sum64(); got != want {
			t.Errorf("fnv1aString(%q) = %#x, want %#x", s, got, want)
		}
	}
}

// TestHashKeyGolden pins the key hash: it must be the same on every node and
// across releases, or a cluster upgrade would move every sticky key.
func TestHashKeyGolden(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want uint64
	}{
		{"", 0x4a16a130b0ea4aae},
		{"a", 0x97a0798cf4a4a8c1},
		{"/index.html", 0x9e6988edee3b7c94},
	} {
		if got := hashKey([]byte(tc.key)); got != tc.want {
			t.Errorf("hashKey(%q) = %#x, want %#x", tc.key, got, tc.want)
		}
	}
	// The ring's points too (values computed independently of this code).
	if got, want := pointHash("s0", 0), uint64(0x6849d97874d207b0); got != want {
		t.Errorf("pointHash(s0, 0) = %#x, want %#x", got, want)
	}
	if got, want := pointHash("web-1", 159), uint64(0x6b13a2dda4c54d14); got != want {
		t.Errorf("pointHash(web-1, 159) = %#x, want %#x", got, want)
	}
}

func hashAlgos() []algo {
	var out []algo
	for _, a := range algos {
		if a.hashed() {
			out = append(out, a)
		}
	}
	return out
}

// TestHashDeterministic checks that two balancers built separately (two
// nodes, or before and after a restart) map every key to the same server, and
// that a key's server does not change between picks.
func TestHashDeterministic(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 2}, {Name: "c", Weight: 3}, {Name: "d", Weight: 1}}
	for _, a := range hashAlgos() {
		t.Run(a.name, func(t *testing.T) {
			b1, b2 := mustNew(t, a.bal, a.hash, srv), mustNew(t, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			for n := range 2000 {
				r := request(n)
				got1, got2, again := b1.Pick(r, load, -1), b2.Pick(r, load, -1), b1.Pick(r, load, -1)
				if got1 != got2 || got1 != again {
					t.Fatalf("key %d: picks %d, %d, %d", n, got1, got2, again)
				}
			}
		})
	}
}

// TestHashDistribution checks that distinct keys spread by weight.
func TestHashDistribution(t *testing.T) {
	srv := []Server{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}, {Name: "c", Weight: 2}}
	for _, a := range hashAlgos() {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, srv)
			counts := count(b, newFakeLoad(srv), 40000, request, nil)
			// Map-based is exact up to sampling noise; a ring of 160
			// points per weight unit has a few percent of skew.
			tol := 0.03
			if a.hash == HashConsistent {
				tol = 0.10
			}
			within(t, "a", counts[0], 10000, tol)
			within(t, "b", counts[1], 10000, tol)
			within(t, "c", counts[2], 20000, tol)
		})
	}
}

// TestHashFallback checks that a request without a key is balanced
// round-robin.
func TestHashFallback(t *testing.T) {
	noKey := []*Request{
		nil,
		{},
		{Source: netip.Addr{}, Query: []byte("ids=1&xid=2&id&ID=3"), Header: func(string) []byte { return nil }},
		{Query: []byte("id=&x=1"), Header: func(string) []byte { return []byte{} }},
	}
	for _, a := range hashAlgos() {
		t.Run(a.name, func(t *testing.T) {
			b := mustNew(t, a.bal, a.hash, servers(3))
			load := newFakeLoad(servers(3))
			for k, r := range noKey {
				var seq []int
				for range 6 {
					seq = append(seq, b.Pick(r, load, -1))
				}
				if slices.Sort(seq); !slices.Equal(seq, []int{0, 0, 1, 1, 2, 2}) {
					t.Errorf("request %d without key: picks %v, want round-robin", k, seq)
				}
			}
		})
	}
}

func TestQueryParam(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{"id=7", "7"},
		{"a=1&id=7&b=2", "7"},
		{"xid=1&id=7", "7"},
		{"idx=1&id=7", "7"},
		{"ID=1&id=7", "7"},
		{"id&id=7", "7"},
		{"id=7&id=8", "7"},
		{"id=a=b", "a=b"},
		{"", ""},
		{"xid=1", ""},
		{"id=", ""},
		{"&&", ""},
	} {
		if got := string(queryParam([]byte(tc.q), "id")); got != tc.want {
			t.Errorf("queryParam(%q) = %q, want %q", tc.q, got, tc.want)
		}
	}
}

// TestHashKeys checks what each algorithm hashes: the same key gives the
// same server whatever else differs.
func TestHashKeys(t *testing.T) {
	srv := servers(16)
	load := newFakeLoad(srv)
	pick := func(a algo, r *Request) int { return mustNew(t, a.bal, a.hash, srv).Pick(r, load, -1) }
	for _, hash := range []string{HashMapBased, HashConsistent} {
		src := algo{"source", state.Balance{Algorithm: state.BalanceSource}, hash}
		// An IPv4 client and its v4-mapped IPv6 form are the same client.
		v4 := netip.MustParseAddr("192.0.2.7")
		if pick(src, &Request{Source: v4}) != pick(src, &Request{Source: netip.AddrFrom16(v4.As16())}) {
			t.Errorf("%s: v4 and v4-mapped v6 differ", hash)
		}
		uri := algo{"uri", state.Balance{Algorithm: state.BalanceURI}, hash}
		if pick(uri, &Request{Path: []byte("/a"), Query: []byte("x=1")}) != pick(uri, &Request{Path: []byte("/a"), Query: []byte("x=2")}) {
			t.Errorf("%s: uri depends on the query", hash)
		}
		up := algo{"url_param", state.Balance{Algorithm: state.BalanceURLParam, Param: "id"}, hash}
		if pick(up, &Request{Path: []byte("/a"), Query: []byte("id=9")}) != pick(up, &Request{Path: []byte("/b"), Query: []byte("x=1&id=9")}) {
			t.Errorf("%s: url_param depends on more than the parameter", hash)
		}
		hdr := algo{"hdr", state.Balance{Algorithm: state.BalanceHdr, Param: "Host"}, hash}
		host := func(v string) func(string) []byte {
			return func(name string) []byte {
				if name == "Host" {
					return []byte(v)
				}
				return nil
			}
		}
		if pick(hdr, &Request{Path: []byte("/a"), Header: host("example.com")}) != pick(hdr, &Request{Path: []byte("/b"), Header: host("example.com")}) {
			t.Errorf("%s: hdr depends on more than the header", hash)
		}
		// Different keys reach different servers (16 keys over 16
		// servers cannot all collide).
		seen := map[int]bool{}
		for n := range 16 {
			seen[pick(up, &Request{Query: []byte(fmt.Sprintf("id=%d", n))})] = true
		}
		if len(seen) < 4 {
			t.Errorf("%s: 16 keys reached only %d servers", hash, len(seen))
		}
	}
}

// TestConsistentMinimalRemap: with 4 equal servers, taking one out moves only
// its keys (about a quarter), and bringing it back restores every key.
func TestConsistentMinimalRemap(t *testing.T) {
	const keys = 10000
	b := mustNew(t, state.Balance{Algorithm: state.BalanceURI}, HashConsistent, servers(4))
	load := newFakeLoad(servers(4))
	picks := func() []int {
		out := make([]int, keys)
		for n := range out {
			out[n] = b.Pick(request(n), load, -1)
		}
		return out
	}
	before := picks()
	load.down[2] = true
	during := picks()
	moved := 0
	for n := range keys {
		switch {
		case before[n] == 2:
			moved++
			if during[n] == 2 {
				t.Fatalf("key %d still on the down server", n)
			}
		case during[n] != before[n]:
			t.Fatalf("key %d moved from %d to %d though its server stayed up", n, before[n], during[n])
		}
	}
	within(t, "keys moved", moved, keys/4, 0.2)
	load.down[2] = false
	if after := picks(); !slices.Equal(after, before) {
		t.Error("bringing the server back did not restore the mapping")
	}

	// Skip is the same walk: the next point clockwise.
	for n := range keys {
		if before[n] == 2 {
			if got := b.Pick(request(n), load, 2); got != during[n] {
				t.Fatalf("key %d with skip 2: picked %d, want %d", n, got, during[n])
			}
		}
	}
}

// TestConsistentKeyedByName: reordering the servers in the configuration, or
// adding one, moves no key between the servers that stay.
func TestConsistentKeyedByName(t *testing.T) {
	bal := state.Balance{Algorithm: state.BalanceURI}
	srv := servers(4)
	b1 := mustNew(t, bal, HashConsistent, srv)
	reversed := slices.Clone(srv)
	slices.Reverse(reversed)
	b2 := mustNew(t, bal, HashConsistent, reversed)
	grown := append(slices.Clone(srv), Server{Name: "s4", Weight: 1})
	b3 := mustNew(t, bal, HashConsistent, grown)
	moved := 0
	for n := range 10000 {
		r := request(n)
		name1 := srv[b1.Pick(r, newFakeLoad(srv), -1)].Name
		if name2 := reversed[b2.Pick(r, newFakeLoad(reversed), -1)].Name; name1 != name2 {
			t.Fatalf("key %d: %s in one order, %s in the other", n, name1, name2)
		}
		if name3 := grown[b3.Pick(r, newFakeLoad(grown), -1)].Name; name3 != name1 {
			if name3 != "s4" {
				t.Fatalf("key %d moved from %s to %s when s4 was added", n, name1, name3)
			}
			moved++
		}
	}
	within(t, "keys moved to the new server", moved, 2000, 0.2)
}

// TestMapBasedRemap: map-based mapping depends only on the usable set, so
// it is deterministic across instances after a change and restored when the
// set is; as documented, a change moves many keys, not only the lost
// server's.
func TestMapBasedRemap(t *testing.T) {
	const keys = 10000
	bal := state.Balance{Algorithm: state.BalanceURI}
	b1, b2 := mustNew(t, bal, HashMapBased, servers(4)), mustNew(t, bal, HashMapBased, servers(4))
	load := newFakeLoad(servers(4))
	picks := func(b Balancer) []int {
		out := make([]int, keys)
		for n := range out {
			out[n] = b.Pick(request(n), load, -1)
		}
		return out
	}
	before := picks(b1)
	load.down[2] = true
	during1, during2 := picks(b1), picks(b2)
	if !slices.Equal(during1, during2) {
		t.Error("two instances disagree after the usable set changed")
	}
	stayedMoved := 0
	for n := range keys {
		if during1[n] == 2 {
			t.Fatalf("key %d on the down server", n)
		}
		if before[n] != 2 && during1[n] != before[n] {
			stayedMoved++
		}
	}
	if stayedMoved < keys/4 {
		t.Errorf("only %d keys of surviving servers moved; map-based should remap many", stayedMoved)
	}
	load.down[2] = false
	if !slices.Equal(picks(b1), before) || !slices.Equal(picks(b2), before) {
		t.Error("restoring the usable set did not restore the mapping")
	}
}
