package proxy

// stats copies the counters of every frontend, backend and server.
func (rt *runtime) stats() Stats {
	s := Stats{Frontends: []FrontendStats{}, Backends: []BackendStats{}}
	for _, f := range rt.frontends {
		s.Frontends = append(s.Frontends, FrontendStats{
			Name: f.name, Mode: string(f.mode), MaxConn: f.maxconn, CounterValues: f.counters.Values(),
		})
	}
	for _, b := range rt.backends {
		bs := BackendStats{Name: b.name, Mode: string(b.mode), Balance: b.balance,
			CounterValues: b.counters.Values(), Servers: []ServerStats{}}
		for _, sv := range b.servers {
			st := ServerStats{
				Name: sv.name, Address: sv.addr, Status: "UP", Weight: sv.def.EffectiveWeight(),
				Backup: sv.def.Backup, MaxConn: sv.def.MaxConn, CounterValues: sv.counters.Values(),
			}
			bs.Servers = append(bs.Servers, st)
		}
		s.Backends = append(s.Backends, bs)
	}
	return s
}
