package proxy

import "sync/atomic"

// Counters are the live counters of a frontend, backend or server, updated
// with atomics on the hot path. HAProxy's `show stat` names in comments.
type Counters struct {
	CurSessions   atomic.Int64 // scur
	MaxSessions   atomic.Int64 // smax
	TotalSessions atomic.Int64 // stot
	BytesIn       atomic.Int64 // bin: bytes received from clients
	BytesOut      atomic.Int64 // bout: bytes sent to clients
	Resp          [6]atomic.Int64
	ReqErrors     atomic.Int64 // ereq: bad requests (frontend)
	ConnErrors    atomic.Int64 // econ: failed connects to a server
	RespErrors    atomic.Int64 // eresp: bad or missing responses
	Retries       atomic.Int64 // wretr
	Redispatches  atomic.Int64 // wredis
	Denied        atomic.Int64 // dreq: refused (limits)
	Timeouts      atomic.Int64 // 408 and 504 produced
	QueueCur      atomic.Int64 // qcur
	QueueMax      atomic.Int64 // qmax
}

// sessionStart counts one more current and total session.
func (c *Counters) sessionStart() {
	c.TotalSessions.Add(1)
	raiseMax(&c.MaxSessions, c.CurSessions.Add(1))
}

func (c *Counters) sessionEnd() { c.CurSessions.Add(-1) }

// status counts one response by its class; index 0 is "other".
func (c *Counters) status(code int) {
	i := code / 100
	if i < 1 || i > 5 {
		i = 0
	}
	c.Resp[i].Add(1)
}

func (c *Counters) queueEnter() { raiseMax(&c.QueueMax, c.QueueCur.Add(1)) }
func (c *Counters) queueLeave() { c.QueueCur.Add(-1) }

func raiseMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// CounterValues is a point-in-time copy of Counters, for the admin API.
type CounterValues struct {
	CurSessions   int64 `json:"scur"`
	MaxSessions   int64 `json:"smax"`
	TotalSessions int64 `json:"stot"`
	BytesIn       int64 `json:"bin"`
	BytesOut      int64 `json:"bout"`
	Resp1xx       int64 `json:"hrsp_1xx"`
	Resp2xx       int64 `json:"hrsp_2xx"`
	Resp3xx       int64 `json:"hrsp_3xx"`
	Resp4xx       int64 `json:"hrsp_4xx"`
	Resp5xx       int64 `json:"hrsp_5xx"`
	RespOther     int64 `json:"hrsp_other"`
	ReqErrors     int64 `json:"ereq"`
	ConnErrors    int64 `json:"econ"`
	RespErrors    int64 `json:"eresp"`
	Retries       int64 `json:"wretr"`
	Redispatches  int64 `json:"wredis"`
	Denied        int64 `json:"dreq"`
	Timeouts      int64 `json:"timeouts"`
	QueueCur      int64 `json:"qcur"`
	QueueMax      int64 `json:"qmax"`
}

// Values copies the counters.
func (c *Counters) Values() CounterValues {
	return CounterValues{
		CurSessions: c.CurSessions.Load(), MaxSessions: c.MaxSessions.Load(),
		TotalSessions: c.TotalSessions.Load(), BytesIn: c.BytesIn.Load(),
		BytesOut: c.BytesOut.Load(), Resp1xx: c.Resp[1].Load(), Resp2xx: c.Resp[2].Load(),
		Resp3xx: c.Resp[3].Load(), Resp4xx: c.Resp[4].Load(), Resp5xx: c.Resp[5].Load(),
		RespOther: c.Resp[0].Load(), ReqErrors: c.ReqErrors.Load(),
		ConnErrors: c.ConnErrors.Load(), RespErrors: c.RespErrors.Load(),
		Retries: c.Retries.Load(), Redispatches: c.Redispatches.Load(),
		Denied: c.Denied.Load(), Timeouts: c.Timeouts.Load(),
		QueueCur: c.QueueCur.Load(), QueueMax: c.QueueMax.Load(),
	}
}

// Stats is a snapshot of every counter of the running config, in config
// order, like HAProxy's `show stat`.
type Stats struct {
	Frontends []FrontendStats `json:"frontends"`
	Backends  []BackendStats  `json:"backends"`
}

// FrontendStats are one frontend's counters.
type FrontendStats struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	MaxConn int    `json:"slim"`
	CounterValues
}

// BackendStats are one backend's counters and its servers'.
type BackendStats struct {
	Name    string `json:"name"`
	Mode    string `json:"mode"`
	Balance string `json:"balance"`
	CounterValues
	Servers []ServerStats `json:"servers"`
}

// ServerStats are one server's counters.
type ServerStats struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Status  string `json:"status"` // UP, DOWN, MAINT, DRAIN
	Weight  int    `json:"weight"`
	Backup  bool   `json:"backup"`
	MaxConn int    `json:"slim"`
	// Health, filled in by the agent from the health monitor.
	CheckStatus     string `json:"check_status,omitempty"` // L4OK, L7STS, ...
	CheckCode       int    `json:"check_code,omitempty"`
	CheckDurationMs int64  `json:"check_duration_ms,omitempty"`
	CheckDesc       string `json:"check_desc,omitempty"`
	LastChangeSec   int64  `json:"lastchg"`
	ChkFail         uint64 `json:"chkfail"`
	ChkDown         uint64 `json:"chkdown"`
	CounterValues
}
