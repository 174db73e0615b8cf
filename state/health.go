package state

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// CheckType names the kind of active health check.
type CheckType string

// The check types.
const (
	// CheckTCP connects, then optionally sends and expects lines.
	CheckTCP CheckType = "tcp"
	// CheckHTTP sends one HTTP/1.1 request (over TLS with https: true).
	CheckHTTP CheckType = "http"
	// CheckTLS completes a TLS handshake.
	CheckTLS CheckType = "tls"
	// CheckAgent reads one line in HAProxy's agent-check protocol.
	CheckAgent CheckType = "agent"
)

// Values of HealthCheck.Observe, OnError, OnMarkedDown and InitState.
const (
	ObserveNone   = "none"
	ObserveLayer4 = "layer4"
	ObserveLayer7 = "layer7"

	OnErrorFastInter   = "fastinter"
	OnErrorFailCheck   = "fail-check"
	OnErrorSuddenDeath = "sudden-death"
	OnErrorMarkDown    = "mark-down"

	OnMarkedDownNone             = "none"
	OnMarkedDownShutdownSessions = "shutdown-sessions"

	InitStateDown = "down"
	InitStateUp   = "up"
)

// Health check defaults, HAProxy's where HAProxy has one.
const (
	DefaultCheckInterval = Duration(2 * time.Second)
	DefaultCheckTimeout  = Duration(time.Second)
	DefaultRise          = 2
	DefaultFall          = 3
	DefaultErrorLimit    = 10
	// MinCheckInterval bounds every check interval from below, so that a
	// typo cannot turn a check into a busy loop.
	MinCheckInterval = Duration(10 * time.Millisecond)
)

// HealthCheck is a backend's `health_check:` section, and, as a partial
// document, a server's override of it. In an override an unset field (zero,
// empty or nil) inherits the backend's value; the booleans are pointers so
// that an override can set them to false.
type HealthCheck struct {
	Type CheckType `yaml:"type" json:"type,omitempty"`
	// Port checks another port than the traffic port; 0: the server's port.
	Port int `yaml:"port" json:"port,omitempty"`

	// HTTP checks: the request line, Host header and extra headers.
	Path    string            `yaml:"path" json:"path,omitempty"`
	Method  string            `yaml:"method" json:"method,omitempty"`
	Host    string            `yaml:"host" json:"host,omitempty"`
	Headers map[string]string `yaml:"headers" json:"headers,omitempty"`
	// HTTPS runs an http check over TLS.
	HTTPS *bool `yaml:"https" json:"https,omitempty"`
	// TLSVerify verifies the server's certificate (https and tls checks;
	// default true, as HAProxy's ssl-server-verify required).
	TLSVerify *bool `yaml:"tls_verify" json:"tls_verify,omitempty"`
	// TLSServerName is the SNI and verified name; default: the server host.
	TLSServerName string `yaml:"tls_server_name" json:"tls_server_name,omitempty"`
	// ExpectStatus is the set of accepted status codes (default 200-399).
	ExpectStatus StatusSet `yaml:"expect_status" json:"expect_status,omitempty"`
	// ExpectBody must occur in the first 16 KiB of the body; a regular
	// expression when ExpectBodyRegex is true.
	ExpectBody      string `yaml:"expect_body" json:"expect_body,omitempty"`
	ExpectBodyRegex *bool  `yaml:"expect_body_regex" json:"expect_body_regex,omitempty"`

	// TCP checks: TCPSend[i] is written (followed by CRLF), then the data
	// read must contain TCPExpect[i], for i = 0, 1, ...
	TCPSend   []string `yaml:"tcp_send" json:"tcp_send,omitempty"`
	TCPExpect []string `yaml:"tcp_expect" json:"tcp_expect,omitempty"`

	// Interval is HAProxy's inter, FastInterval its fastinter (while a
	// transition is under way), DownInterval its downinter (while down).
	// Both default to the effective interval (ServerCheck resolves them).
	Interval     Duration `yaml:"interval" json:"interval,omitempty"`
	FastInterval Duration `yaml:"fast_interval" json:"fast_interval,omitempty"`
	DownInterval Duration `yaml:"down_interval" json:"down_interval,omitempty"`
	Timeout      Duration `yaml:"timeout" json:"timeout,omitempty"`
	Rise         int      `yaml:"rise" json:"rise,omitempty"`
	Fall         int      `yaml:"fall" json:"fall,omitempty"`

	// Passive observation of live traffic (HAProxy's observe, error-limit,
	// on-error, on-marked-down).
	Observe      string `yaml:"observe" json:"observe,omitempty"`
	ErrorLimit   int    `yaml:"error_limit" json:"error_limit,omitempty"`
	OnError      string `yaml:"on_error" json:"on_error,omitempty"`
	OnMarkedDown string `yaml:"on_marked_down" json:"on_marked_down,omitempty"`
	// InitState is the state of a server that has not been checked yet.
	InitState string `yaml:"init_state" json:"init_state,omitempty"`
}

// IsHTTPS reports whether an http check runs over TLS.
func (h *HealthCheck) IsHTTPS() bool { return h.HTTPS != nil && *h.HTTPS }

// VerifiesTLS reports whether the server certificate is verified.
func (h *HealthCheck) VerifiesTLS() bool { return h.TLSVerify == nil || *h.TLSVerify }

// BodyIsRegex reports whether ExpectBody is a regular expression.
func (h *HealthCheck) BodyIsRegex() bool { return h.ExpectBodyRegex != nil && *h.ExpectBodyRegex }

// ServerCheck returns the effective health check of server s of backend b:
// the server's override merged over the backend's check (or over a plain
// tcp check when the backend has none), with defaults applied. checked
// reports whether the server is actively checked (`check: true`). It is
// pure: the config keeps the override as written.
func ServerCheck(b *Backend, s *Server) (hc HealthCheck, checked bool) {
	if b.HealthCheck != nil {
		hc = b.HealthCheck.clone()
	}
	if s.HealthCheck != nil {
		hc = mergeCheck(hc, *s.HealthCheck)
	}
	hc.applyDefaults(true)
	return hc, s.Check
}

// mergeCheck returns over merged onto base. When over changes the check
// type, only the type-independent fields (timing, observation) are
// inherited: a server switched to a tcp check does not carry the
// backend's HTTP path.
func mergeCheck(base, over HealthCheck) HealthCheck {
	if over.Type != "" && base.Type != "" && over.Type != base.Type {
		base = HealthCheck{
			Port: base.Port, Interval: base.Interval, FastInterval: base.FastInterval,
			DownInterval: base.DownInterval, Timeout: base.Timeout, Rise: base.Rise, Fall: base.Fall,
			Observe: base.Observe, ErrorLimit: base.ErrorLimit, OnError: base.OnError,
			OnMarkedDown: base.OnMarkedDown, InitState: base.InitState,
		}
	}
	set(&base.Type, over.Type)
	set(&base.Port, over.Port)
	set(&base.Path, over.Path)
	set(&base.Method, over.Method)
	set(&base.Host, over.Host)
	if over.Headers != nil {
		base.Headers = mapsClone(over.Headers)
	}
	setPtr(&base.HTTPS, over.HTTPS)
	setPtr(&base.TLSVerify, over.TLSVerify)
	set(&base.TLSServerName, over.TLSServerName)
	if over.ExpectStatus != nil {
		base.ExpectStatus = slices.Clone(over.ExpectStatus)
	}
	set(&base.ExpectBody, over.ExpectBody)
	setPtr(&base.ExpectBodyRegex, over.ExpectBodyRegex)
	if over.TCPSend != nil {
		base.TCPSend = slices.Clone(over.TCPSend)
	}
	if over.TCPExpect != nil {
		base.TCPExpect = slices.Clone(over.TCPExpect)
	}
	set(&base.Interval, over.Interval)
	set(&base.FastInterval, over.FastInterval)
	set(&base.DownInterval, over.DownInterval)
	set(&base.Timeout, over.Timeout)
	set(&base.Rise, over.Rise)
	set(&base.Fall, over.Fall)
	set(&base.Observe, over.Observe)
	set(&base.ErrorLimit, over.ErrorLimit)
	set(&base.OnError, over.OnError)
	set(&base.OnMarkedDown, over.OnMarkedDown)
	set(&base.InitState, over.InitState)
	return base
}

func set[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

func setPtr[T any](dst **T, v *T) {
	if v != nil {
		*dst = ptr(*v)
	}
}

func mapsClone(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (h *HealthCheck) clone() HealthCheck {
	c := *h
	if h.Headers != nil {
		c.Headers = mapsClone(h.Headers)
	}
	c.ExpectStatus = slices.Clone(h.ExpectStatus)
	c.TCPSend = slices.Clone(h.TCPSend)
	c.TCPExpect = slices.Clone(h.TCPExpect)
	for _, p := range []**bool{&c.HTTPS, &c.TLSVerify, &c.ExpectBodyRegex} {
		if *p != nil {
			*p = ptr(**p)
		}
	}
	return c
}

// applyDefaults fills unset fields. Each default depends only on the type
// and on other fields of the same check, so applying it to a merged check
// gives the same result however often it runs. The intervals derived from
// another field (fast_interval and down_interval follow interval) are
// filled only when derived is true: a backend's check keeps them unset, so
// that a server overriding interval gets its own fast and down intervals.
func (h *HealthCheck) applyDefaults(derived bool) {
	if h.Type == "" {
		h.Type = CheckTCP
	}
	setDur(&h.Interval, DefaultCheckInterval)
	if derived {
		setDur(&h.FastInterval, h.Interval)
		setDur(&h.DownInterval, h.Interval)
	}
	// HAProxy bounds a check by inter when no check timeout is set.
	setDur(&h.Timeout, min(DefaultCheckTimeout, h.Interval))
	setInt(&h.Rise, DefaultRise)
	setInt(&h.Fall, DefaultFall)
	if h.Observe == "" {
		h.Observe = ObserveNone
	}
	setInt(&h.ErrorLimit, DefaultErrorLimit)
	if h.OnError == "" {
		h.OnError = OnErrorFailCheck
	}
	if h.OnMarkedDown == "" {
		h.OnMarkedDown = OnMarkedDownNone
	}
	if h.InitState == "" {
		h.InitState = InitStateDown
	}
	switch h.Type {
	case CheckHTTP:
		if h.Method == "" {
			h.Method = "GET"
		}
		if h.Path == "" {
			h.Path = "/"
		}
		if h.HTTPS == nil {
			h.HTTPS = ptr(false)
		}
		if h.TLSVerify == nil {
			h.TLSVerify = ptr(true)
		}
		if h.ExpectStatus == nil {
			h.ExpectStatus = StatusSet{{200, 399}}
		}
		if h.ExpectBodyRegex == nil {
			h.ExpectBodyRegex = ptr(false)
		}
	case CheckTLS:
		if h.TLSVerify == nil {
			h.TLSVerify = ptr(true)
		}
	}
}

// applyHealthDefaults completes the backend's check and its servers'
// agent intervals. Server overrides stay as written (see ServerCheck).
func (b *Backend) applyHealthDefaults() {
	if b.HealthCheck != nil {
		b.HealthCheck.applyDefaults(false)
	}
	for j := range b.Servers {
		s := &b.Servers[j]
		if s.AgentPort != 0 && s.AgentInterval == 0 {
			hc, _ := ServerCheck(b, s)
			s.AgentInterval = hc.Interval
		}
	}
}

// validateHealth checks the backend's check and every server's effective
// check. A fault a server inherits from the backend is reported once, at
// the backend; a server's path only carries faults its override causes.
func validateHealth(es *Errors, p string, b Backend) {
	var inherited map[FieldError]bool
	if b.HealthCheck != nil {
		var bes Errors
		full := b.HealthCheck.clone()
		full.applyDefaults(true)
		validateCheck(&bes, "", &full)
		inherited = map[FieldError]bool{}
		for _, e := range bes {
			inherited[e] = true
			es.add(p+".health_check"+e.Path, "%s", e.Msg)
		}
	}
	for j := range b.Servers {
		s := &b.Servers[j]
		sp := fmt.Sprintf("%s.servers[%d]", p, j)
		if s.Slowstart < 0 {
			es.add(sp+".slowstart", "must not be negative")
		}
		if s.AgentPort < 0 || s.AgentPort > 65535 {
			es.add(sp+".agent_port", "invalid port %d (want 1-65535)", s.AgentPort)
		}
		if s.AgentPort != 0 && s.AgentInterval < MinCheckInterval {
			es.add(sp+".agent_interval", "must be at least %s", MinCheckInterval)
		}
		if s.HealthCheck == nil {
			continue
		}
		hc, _ := ServerCheck(&b, s)
		var ses Errors
		validateCheck(&ses, "", &hc)
		for _, e := range ses {
			if !inherited[e] {
				es.add(sp+".health_check"+e.Path, "%s", e.Msg)
			}
		}
	}
}

var (
	httpToken = regexp.MustCompile(`^[!#$%&'*+.^_` + "`" + `|~0-9A-Za-z-]+$`)
	// forbiddenHeaders are set by the checker itself.
	forbiddenHeaders = map[string]string{
		"host":              "set it with host",
		"connection":        "checks always close the connection",
		"content-length":    "checks send no body",
		"transfer-encoding": "checks send no body",
	}
)

// validateCheck validates a complete (defaulted) check; paths are relative
// (".rise").
func validateCheck(es *Errors, p string, h *HealthCheck) {
	isHTTP := h.Type == CheckHTTP
	switch h.Type {
	case CheckTCP, CheckHTTP, CheckTLS, CheckAgent:
	default:
		es.add(p+".type", "unknown check type %q (want tcp, http, tls or agent)", h.Type)
	}
	if h.Port < 0 || h.Port > 65535 {
		es.add(p+".port", "invalid port %d (want 1-65535)", h.Port)
	}
	needHTTP := func(field string, isSet bool) {
		if isSet && !isHTTP {
			es.add(p+"."+field, "needs type http")
		}
	}
	needHTTP("path", h.Path != "")
	needHTTP("method", h.Method != "")
	needHTTP("host", h.Host != "")
	needHTTP("headers", len(h.Headers) != 0)
	needHTTP("https", h.IsHTTPS())
	needHTTP("expect_status", len(h.ExpectStatus) != 0)
	needHTTP("expect_body", h.ExpectBody != "")
	if h.TLSServerName != "" && !(isHTTP && h.IsHTTPS()) && h.Type != CheckTLS {
		es.add(p+".tls_server_name", "needs type tls, or type http with https: true")
	}
	if (len(h.TCPSend) != 0 || len(h.TCPExpect) != 0) && h.Type != CheckTCP {
		es.add(p+".tcp_send", "needs type tcp")
	}
	if isHTTP {
		if !httpToken.MatchString(h.Method) {
			es.add(p+".method", "invalid method %q", h.Method)
		}
		if !strings.HasPrefix(h.Path, "/") || strings.ContainsFunc(h.Path, isSpaceOrCtl) {
			es.add(p+".path", "must start with / and hold no spaces or control characters")
		}
		if strings.ContainsFunc(h.Host, isSpaceOrCtl) {
			es.add(p+".host", "must hold no spaces or control characters")
		}
		for _, k := range sortedKeys(h.Headers) {
			if !httpToken.MatchString(k) {
				es.add(p+".headers", "invalid header name %q", k)
			} else if why, bad := forbiddenHeaders[strings.ToLower(k)]; bad {
				es.add(p+".headers", "header %q not allowed: %s", k, why)
			}
			if strings.ContainsAny(h.Headers[k], "\r\n\x00") {
				es.add(p+".headers", "value of %q holds a line break", k)
			}
		}
		if len(h.ExpectStatus) == 0 {
			es.add(p+".expect_status", "must list at least one code")
		}
		for _, r := range h.ExpectStatus {
			if r.Lo < 100 || r.Hi > 599 || r.Lo > r.Hi {
				es.add(p+".expect_status", "invalid status range %s (want codes 100-599)", r)
			}
		}
		if h.BodyIsRegex() {
			if _, err := regexp.Compile(h.ExpectBody); err != nil {
				es.add(p+".expect_body", "invalid regular expression: %v", err)
			}
		}
	}
	for i, line := range h.TCPSend {
		if strings.ContainsAny(line, "\r\n") {
			es.add(fmt.Sprintf("%s.tcp_send[%d]", p, i), "must be one line (CRLF is appended)")
		}
	}
	for i, e := range h.TCPExpect {
		if e == "" {
			es.add(fmt.Sprintf("%s.tcp_expect[%d]", p, i), "must not be empty")
		}
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"interval", h.Interval}, {"fast_interval", h.FastInterval}, {"down_interval", h.DownInterval}} {
		if d.v < MinCheckInterval {
			es.add(p+"."+d.name, "must be at least %s, got %s", MinCheckInterval, d.v)
		}
	}
	if h.Timeout <= 0 {
		es.add(p+".timeout", "must be positive")
	} else if h.Timeout > h.Interval {
		es.add(p+".timeout", "must be <= interval (%s), got %s", h.Interval, h.Timeout)
	}
	if h.Rise < 1 || h.Rise > 1000 {
		es.add(p+".rise", "must be >= 1 and <= 1000")
	}
	if h.Fall < 1 || h.Fall > 1000 {
		es.add(p+".fall", "must be >= 1 and <= 1000")
	}
	if h.ErrorLimit < 1 {
		es.add(p+".error_limit", "must be >= 1")
	}
	oneOf(es, p+".observe", h.Observe, ObserveNone, ObserveLayer4, ObserveLayer7)
	oneOf(es, p+".on_error", h.OnError, OnErrorFastInter, OnErrorFailCheck, OnErrorSuddenDeath, OnErrorMarkDown)
	oneOf(es, p+".on_marked_down", h.OnMarkedDown, OnMarkedDownNone, OnMarkedDownShutdownSessions)
	oneOf(es, p+".init_state", h.InitState, InitStateDown, InitStateUp)
}

func oneOf(es *Errors, path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		es.add(path, "unknown value %q (want %s)", v, strings.Join(allowed, ", "))
	}
}

func isSpaceOrCtl(r rune) bool { return r <= ' ' || r == 0x7f }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

func (r StatusRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// StatusSet is a set of accepted HTTP status codes. In YAML and JSON it is
// a code (200), a range ("200-399"), a comma-separated string of both
// ("200,204,300-399") or a list of any of those ([200, "300-302"]). It is
// written back as one string.
type StatusSet []StatusRange

// Contains reports whether code is in the set.
func (s StatusSet) Contains(code int) bool {
	for _, r := range s {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

func (s StatusSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// ParseStatusSet parses "200", "200-399" or "200,204,300-399".
func ParseStatusSet(str string) (StatusSet, error) {
	var set StatusSet
	for part := range strings.SplitSeq(str, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, errA := strconv.Atoi(strings.TrimSpace(lo))
		b, errB := a, error(nil)
		if isRange {
			b, errB = strconv.Atoi(strings.TrimSpace(hi))
		}
		if errA != nil || errB != nil {
			return nil, fmt.Errorf("invalid status %q (want e.g. 200, 200-399)", part)
		}
		set = append(set, StatusRange{a, b})
	}
	return set, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *StatusSet) UnmarshalYAML(n *yaml.Node) error {
	var items []*yaml.Node
	switch n.Kind {
	case yaml.ScalarNode:
		items = []*yaml.Node{n}
	case yaml.SequenceNode:
		items = n.Content
	default:
		return fmt.Errorf("line %d: expect_status: want a code, a range or a list", n.Line)
	}
	set := StatusSet{}
	for _, it := range items {
		if it.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: expect_status: want a code or a range", it.Line)
		}
		part, err := ParseStatusSet(it.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", it.Line, err)
		}
		set = append(set, part...)
	}
	*s = set
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s StatusSet) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON implements json.Marshaler.
func (s StatusSet) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (s *StatusSet) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		list = []json.RawMessage{b}
	}
	set := StatusSet{}
	for _, raw := range list {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			var n int
			if err := json.Unmarshal(raw, &n); err != nil {
				return fmt.Errorf("expect_status: want a code, a range or a list")
			}
			str = strconv.Itoa(n)
		}
		part, err := ParseStatusSet(str)
		if err != nil {
			return err
		}
		set = append(set, part...)
	}
	*s = set
	return nil
}
