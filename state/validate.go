package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Built-in defaults, HAProxy-like, applied where neither the field nor the
// defaults section sets a value.
const (
	DefaultGlobalMaxConn  = 20000
	DefaultHardStopAfter  = Duration(30 * time.Second)
	DefaultMaxHeaderSize  = Size(16 << 10)
	DefaultMaxRequestLine = Size(8 << 10)
	DefaultRetries        = 3
)

// DefaultTimeouts are used for every timeout left unset.
var defaultTimeouts = Timeouts{
	Connect:       Duration(5 * time.Second),
	Client:        Duration(30 * time.Second),
	Server:        Duration(30 * time.Second),
	HTTPRequest:   Duration(10 * time.Second),
	HTTPKeepAlive: Duration(10 * time.Second),
	Queue:         Duration(30 * time.Second),
	Tunnel:        Duration(time.Hour),
}

// FieldError is one fault in a config, located by its path
// (`backends[1].servers[0].address`).
type FieldError struct {
	Path string `json:"path"`
	Msg  string `json:"message"`
}

func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// Errors lists every fault found in a config.
type Errors []FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es *Errors) add(path, format string, args ...any) {
	*es = append(*es, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Parse decodes a proxy config strictly (unknown keys are errors), applies
// defaults and validates it. The returned config is complete: every field
// that has a default is set. An empty document is a valid, empty config.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode: %w", err)
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults fills every unset field from the defaults section and the
// built-in defaults. It is idempotent.
func (c *Config) ApplyDefaults() {
	g := &c.Global
	setInt(&g.MaxConn, DefaultGlobalMaxConn)
	setDur(&g.HardStopAfter, DefaultHardStopAfter)
	if g.MaxHeaderSize == 0 {
		g.MaxHeaderSize = DefaultMaxHeaderSize
	}
	if g.HealthVerdict == "" {
		g.HealthVerdict = PolicyMajority
	}
	if g.MaxRequestLine == 0 {
		g.MaxRequestLine = min(DefaultMaxRequestLine, g.MaxHeaderSize)
	}
	d := &c.Defaults
	if d.Mode == "" {
		d.Mode = ModeHTTP
	}
	d.Timeouts.inherit(defaultTimeouts)
	if d.Retries == nil {
		d.Retries = ptr(DefaultRetries)
	}
	if d.Redispatch == nil {
		d.Redispatch = ptr(false)
	}
	setInt(&d.MaxConn, g.MaxConn)
	for i := range c.Frontends {
		f := &c.Frontends[i]
		if f.Mode == "" {
			f.Mode = d.Mode
		}
		setInt(&f.MaxConn, d.MaxConn)
		if f.Timeouts == nil {
			f.Timeouts = &Timeouts{}
		}
		f.Timeouts.inherit(d.Timeouts)
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.Mode == "" {
			b.Mode = d.Mode
		}
		if b.Balance == "" {
			b.Balance = "roundrobin"
		}
		if b.HashType == "" {
			b.HashType = "map-based"
		}
		if b.Retries == nil {
			b.Retries = ptr(*d.Retries)
		}
		if b.Redispatch == nil {
			b.Redispatch = ptr(*d.Redispatch)
		}
		if b.Timeouts == nil {
			b.Timeouts = &Timeouts{}
		}
		b.Timeouts.inherit(d.Timeouts)
		for j := range b.Servers {
			if b.Servers[j].Weight == nil {
				b.Servers[j].Weight = ptr(1)
			}
		}
		b.applyHealthDefaults()
	}
	c.VIP.ApplyDefaults()
}

func (t *Timeouts) inherit(from Timeouts) {
	setDur(&t.Connect, from.Connect)
	setDur(&t.Client, from.Client)
	setDur(&t.Server, from.Server)
	setDur(&t.HTTPRequest, from.HTTPRequest)
	setDur(&t.HTTPKeepAlive, from.HTTPKeepAlive)
	setDur(&t.Queue, from.Queue)
	setDur(&t.Tunnel, from.Tunnel)
}

func setInt(v *int, d int) {
	if *v == 0 {
		*v = d
	}
}

func setDur(v *Duration, d Duration) {
	if *v == 0 {
		*v = d
	}
}

func ptr[T any](v T) *T { return &v }

// Validate checks the whole document and returns every fault as Errors, or
// nil. It needs no network, so every node of a cluster reaches the same
// verdict on the same document.
func (c *Config) Validate() error {
	var es Errors
	c.validateGlobal(&es)
	backends := map[string]Mode{}
	for i, b := range c.Backends {
		p := fmt.Sprintf("backends[%d]", i)
		validateBackend(&es, p, b)
		if b.Name != "" {
			if _, dup := backends[b.Name]; dup {
				es.add(p+".name", "duplicate backend name %q", b.Name)
			}
			backends[b.Name] = b.Mode
		}
	}
	names := map[string]bool{}
	binds := map[string]string{}
	for i, f := range c.Frontends {
		p := fmt.Sprintf("frontends[%d]", i)
		validateFrontend(&es, p, f, backends)
		if f.Name != "" {
			if names[f.Name] {
				es.add(p+".name", "duplicate frontend name %q", f.Name)
			}
			names[f.Name] = true
		}
		for j, a := range f.Bind {
			if other, dup := binds[a]; dup {
				es.add(fmt.Sprintf("%s.bind[%d]", p, j), "address %s already bound by frontend %q", a, other)
			}
			binds[a] = f.Name
		}
	}
	c.VIP.validate(&es, "vip")
	if len(es) == 0 {
		return nil
	}
	return es
}

func (c *Config) validateGlobal(es *Errors) {
	if c.Global.MaxConn < 0 {
		es.add("global.maxconn", "must not be negative")
	}
	if c.Global.MaxHeaderSize < 1024 || c.Global.MaxHeaderSize > 1<<20 {
		es.add("global.max_header_size", "must be between 1k and 1m, got %s", c.Global.MaxHeaderSize)
	}
	if c.Global.MaxRequestLine < 64 || c.Global.MaxRequestLine > c.Global.MaxHeaderSize {
		es.add("global.max_request_line", "must be between 64 and max_header_size, got %s", c.Global.MaxRequestLine)
	}
	if _, err := ParseVerdictPolicy(string(c.Global.HealthVerdict)); err != nil {
		es.add("global.health_verdict", "%v", err)
	}
	validateMode(es, "defaults.mode", c.Defaults.Mode)
	if c.Defaults.Retries != nil && (*c.Defaults.Retries < 0 || *c.Defaults.Retries > 100) {
		es.add("defaults.retries", "must be between 0 and 100")
	}
	if c.Defaults.MaxConn < 0 {
		es.add("defaults.maxconn", "must not be negative")
	}
}

func validateMode(es *Errors, path string, m Mode) {
	if m != ModeHTTP && m != ModeTCP {
		es.add(path, "unknown mode %q (want http or tcp)", m)
	}
}

func validateFrontend(es *Errors, p string, f Frontend, backends map[string]Mode) {
	if f.Name == "" {
		es.add(p+".name", "missing")
	} else if !validName(f.Name) {
		es.add(p+".name", "invalid name %q (letters, digits, '-', '_', '.')", f.Name)
	}
	if len(f.Bind) == 0 {
		es.add(p+".bind", "at least one address is required")
	}
	for j, a := range f.Bind {
		if msg := checkHostPort(a, true); msg != "" {
			es.add(fmt.Sprintf("%s.bind[%d]", p, j), "%s", msg)
		}
	}
	validateMode(es, p+".mode", f.Mode)
	if f.MaxConn < 0 {
		es.add(p+".maxconn", "must not be negative")
	}
	if f.Mode == ModeTCP && (f.ForwardFor || f.Forwarded) {
		es.add(p+".forwardfor", "needs mode http")
	}
	switch bm, ok := backends[f.DefaultBackend]; {
	case f.DefaultBackend == "":
		es.add(p+".default_backend", "missing")
	case !ok:
		es.add(p+".default_backend", "unknown backend %q", f.DefaultBackend)
	case bm != f.Mode && bm != "":
		es.add(p+".default_backend", "backend %q is mode %s, frontend is mode %s", f.DefaultBackend, bm, f.Mode)
	}
}

func validateBackend(es *Errors, p string, b Backend) {
	if b.Name == "" {
		es.add(p+".name", "missing")
	} else if !validName(b.Name) {
		es.add(p+".name", "invalid name %q (letters, digits, '-', '_', '.')", b.Name)
	}
	validateMode(es, p+".mode", b.Mode)
	bal, err := ParseBalance(b.Balance)
	if err != nil {
		es.add(p+".balance", "%v", err)
	} else if b.Mode == ModeTCP && bal.NeedsHTTP() {
		es.add(p+".balance", "%s needs mode http", bal.Algorithm)
	}
	if b.HashType != "map-based" && b.HashType != "consistent" {
		es.add(p+".hash_type", "unknown hash type %q (want map-based or consistent)", b.HashType)
	}
	if b.MaxConn < 0 {
		es.add(p+".maxconn", "must not be negative")
	}
	if b.Retries != nil && (*b.Retries < 0 || *b.Retries > 100) {
		es.add(p+".retries", "must be between 0 and 100")
	}
	seen := map[string]bool{}
	for j, s := range b.Servers {
		sp := fmt.Sprintf("%s.servers[%d]", p, j)
		switch {
		case s.Name == "":
			es.add(sp+".name", "missing")
		case !validName(s.Name):
			es.add(sp+".name", "invalid name %q (letters, digits, '-', '_', '.')", s.Name)
		case seen[s.Name]:
			es.add(sp+".name", "duplicate server name %q", s.Name)
		}
		seen[s.Name] = true
		if msg := checkHostPort(s.Address, false); msg != "" {
			es.add(sp+".address", "%s", msg)
		}
		if w := s.EffectiveWeight(); w < 0 || w > 256 {
			es.add(sp+".weight", "must be between 0 and 256, got %d", w)
		}
		if s.MaxConn < 0 {
			es.add(sp+".maxconn", "must not be negative")
		}
	}
	validateHealth(es, p, b)
}

func validName(s string) bool {
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

// checkHostPort returns why addr is not a usable "host:port", or "". A bind
// address must be an IP (or empty host: all addresses); a server may be
// named by DNS.
func checkHostPort(addr string, bind bool) string {
	if addr == "" {
		return "missing"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return "missing port"
		}
		return fmt.Sprintf("invalid address %q", addr)
	}
	// Port 0 (any free port) is allowed on binds, for tests.
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || n == 0 && !bind {
		return fmt.Sprintf("invalid port %q (want 1-65535)", port)
	}
	if host == "" {
		if bind {
			return ""
		}
		return "missing host"
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	if bind {
		return fmt.Sprintf("bind host %q is not an IP address", host)
	}
	if !validHostname(host) {
		return fmt.Sprintf("invalid host %q", host)
	}
	return ""
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if r != '-' && !(r >= '0' && r <= '9') && !(r >= 'a' && r <= 'z') && !(r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}
