// Package state holds Fulcrum's replicated model: the proxy config schema with
// its validation, and the commands, Store (the FSM) and verdict rule that Raft
// replicates. It is pure and deterministic: it imports no other package of the
// project and does no I/O beyond the readers and writers it is handed.
package state

// Config is the proxy config document: the one that a standalone node reads
// from its proxy_config file and that a cluster replicates. Field names follow
// HAProxy's vocabulary.
type Config struct {
	Global    Global     `yaml:"global" json:"global"`
	Defaults  Defaults   `yaml:"defaults" json:"defaults"`
	Frontends []Frontend `yaml:"frontends" json:"frontends"`
	Backends  []Backend  `yaml:"backends" json:"backends"`
	// VIP is the virtual IP section; nil (absent) means mode none.
	VIP *VIP `yaml:"vip" json:"vip,omitempty"`
}

// Global holds process-wide settings.
type Global struct {
	// MaxConn caps concurrent client connections over the whole process.
	MaxConn int `yaml:"maxconn" json:"maxconn"`
	// HardStopAfter bounds how long a stopping process waits for in-flight
	// requests.
	HardStopAfter Duration `yaml:"hard_stop_after" json:"hard_stop_after"`
	// MaxHeaderSize bounds the request line plus headers (HAProxy's
	// tune.bufsize share for headers).
	MaxHeaderSize Size `yaml:"max_header_size" json:"max_header_size"`
	// MaxRequestLine bounds the request line alone; beyond it: 414.
	MaxRequestLine Size `yaml:"max_request_line" json:"max_request_line"`
	// HealthVerdict is how a cluster turns its nodes' health views into
	// one verdict per server: majority (default), any or all.
	HealthVerdict VerdictPolicy `yaml:"health_verdict" json:"health_verdict,omitempty"`
}

// Defaults are inherited by frontends and backends that leave a field unset.
type Defaults struct {
	Mode       Mode     `yaml:"mode" json:"mode"`
	Timeouts   Timeouts `yaml:"timeouts" json:"timeouts"`
	Retries    *int     `yaml:"retries" json:"retries"`
	Redispatch *bool    `yaml:"redispatch" json:"redispatch"`
	MaxConn    int      `yaml:"maxconn" json:"maxconn"`
}

// Timeouts are HAProxy's `timeout` family.
type Timeouts struct {
	Connect       Duration `yaml:"connect" json:"connect"`
	Client        Duration `yaml:"client" json:"client"`
	Server        Duration `yaml:"server" json:"server"`
	HTTPRequest   Duration `yaml:"http_request" json:"http_request"`
	HTTPKeepAlive Duration `yaml:"http_keep_alive" json:"http_keep_alive"`
	Queue         Duration `yaml:"queue" json:"queue"`
	Tunnel        Duration `yaml:"tunnel" json:"tunnel"`
}

// Mode is the proxying mode of a frontend or backend.
type Mode string

// The modes.
const (
	ModeHTTP Mode = "http"
	ModeTCP  Mode = "tcp"
)

// Frontend is a set of listening addresses and where their traffic goes.
type Frontend struct {
	Name           string   `yaml:"name" json:"name"`
	Bind           []string `yaml:"bind" json:"bind"`
	Mode           Mode     `yaml:"mode" json:"mode"`
	MaxConn        int      `yaml:"maxconn" json:"maxconn"`
	ForwardFor     bool     `yaml:"forwardfor" json:"forwardfor"`
	Forwarded      bool     `yaml:"forwarded" json:"forwarded"`
	DefaultBackend string   `yaml:"default_backend" json:"default_backend"`
	// Timeouts override the defaults' client-side timeouts for this frontend.
	Timeouts *Timeouts `yaml:"timeouts" json:"timeouts,omitempty"`
}

// Backend is a pool of servers and how to balance across them.
type Backend struct {
	Name       string    `yaml:"name" json:"name"`
	Mode       Mode      `yaml:"mode" json:"mode"`
	Balance    string    `yaml:"balance" json:"balance"`
	HashType   string    `yaml:"hash_type" json:"hash_type"`
	MaxConn    int       `yaml:"maxconn" json:"maxconn"`
	Retries    *int      `yaml:"retries" json:"retries"`
	Redispatch *bool     `yaml:"redispatch" json:"redispatch"`
	Timeouts   *Timeouts `yaml:"timeouts" json:"timeouts,omitempty"`
	Servers    []Server  `yaml:"servers" json:"servers"`
	// HealthCheck is how servers with check: true are checked (see
	// ServerCheck); nil: a plain tcp check.
	HealthCheck *HealthCheck `yaml:"health_check" json:"health_check,omitempty"`
}

// Server is one member of a backend.
type Server struct {
	Name    string `yaml:"name" json:"name"`
	Address string `yaml:"address" json:"address"`
	// Weight defaults to 1 when unset (HAProxy's default); 0 takes the
	// server out of balancing while keeping it configured.
	Weight  *int `yaml:"weight" json:"weight"`
	MaxConn int  `yaml:"maxconn" json:"maxconn"`
	Backup  bool `yaml:"backup" json:"backup"`
	// Check enables active health checks (HAProxy's `check`).
	Check bool `yaml:"check" json:"check"`
	// Slowstart ramps the weight up over this window after the server
	// comes UP.
	Slowstart Duration `yaml:"slowstart" json:"slowstart,omitempty"`
	// AgentPort enables an agent check on this port, every AgentInterval
	// (default: the check interval).
	AgentPort     int      `yaml:"agent_port" json:"agent_port,omitempty"`
	AgentInterval Duration `yaml:"agent_interval" json:"agent_interval,omitempty"`
	// HealthCheck overrides fields of the backend's health_check.
	HealthCheck *HealthCheck `yaml:"health_check" json:"health_check,omitempty"`
}

// EffectiveWeight is the server's weight with the default applied.
func (s Server) EffectiveWeight() int {
	if s.Weight == nil {
		return 1
	}
	return *s.Weight
}
