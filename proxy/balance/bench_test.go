package balance

import "testing"

// BenchmarkPick measures one Pick over 10 servers of mixed weights, one of
// them down, with varying keys; every algorithm must report 0 allocs/op.
func BenchmarkPick(b *testing.B) {
	srv := servers(10)
	for i := range srv {
		srv[i].Weight = 1 + i%4
		srv[i].MaxConn = 100
	}
	reqs := make([]*Request, 256)
	for n := range reqs {
		reqs[n] = request(n)
	}
	for _, a := range algos {
		b.Run(a.name, func(b *testing.B) {
			bal := mustNew(b, a.bal, a.hash, srv)
			load := newFakeLoad(srv)
			load.down[4] = true
			for i := range load.active {
				load.active[i] = int64(i * 7 % 5)
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				bal.Pick(reqs[n&255], load, -1)
				n++
			}
		})
	}
	b.Run("roundrobin/parallel", func(b *testing.B) {
		bal := mustNew(b, algos[0].bal, "", srv)
		load := newAtomicLoad(srv)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				bal.Pick(nil, load, -1)
			}
		})
	})
}
