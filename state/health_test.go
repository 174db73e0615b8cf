package state

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestHealthCheckDefaults(t *testing.T) {
	c, err := Parse([]byte(`
backends:
  - name: app
    health_check: {type: http, path: /healthz, interval: 5s}
    servers:
      - {name: a, address: "127.0.0.1:80", check: true, slowstart: 30s, agent_port: 9999}
      - {name: b, address: "127.0.0.1:81"}
  - name: plain
    servers: [{name: c, address: "127.0.0.1:82", check: true}]
`))
	if err != nil {
		t.Fatal(err)
	}
	hc := c.Backends[0].HealthCheck
	full, _ := ServerCheck(&c.Backends[0], &c.Backends[0].Servers[0])
	if full.FastInterval.D() != 5*time.Second || full.DownInterval.D() != 5*time.Second {
		t.Errorf("derived intervals: %+v", full)
	}
	if hc.Method != "GET" || hc.Path != "/healthz" || hc.Timeout.D() != time.Second || hc.Rise != 2 || hc.Fall != 3 ||
		hc.ErrorLimit != 10 || hc.OnError != OnErrorFailCheck || hc.InitState != InitStateDown ||
		hc.Observe != ObserveNone || !hc.VerifiesTLS() || hc.IsHTTPS() || hc.ExpectStatus.String() != "200-399" {
		t.Errorf("defaults not applied: %+v", hc)
	}
	a := c.Backends[0].Servers[0]
	if a.AgentInterval.D() != 5*time.Second || a.Slowstart.D() != 30*time.Second {
		t.Errorf("server a: %+v", a)
	}
	if _, checked := ServerCheck(&c.Backends[0], &c.Backends[0].Servers[1]); checked {
		t.Error("server b has no check: true but is checked")
	}
	plain, checked := ServerCheck(&c.Backends[1], &c.Backends[1].Servers[0])
	if !checked || plain.Type != CheckTCP || plain.Interval != DefaultCheckInterval || plain.Path != "" {
		t.Errorf("default check %+v checked %v, want plain tcp", plain, checked)
	}
}

func TestExpectStatusForms(t *testing.T) {
	for in, want := range map[string]string{
		`[200, 204]`:             "200,204",
		`"200-399"`:              "200-399",
		`200`:                    "200",
		`["200-299", 304]`:       "200-299,304",
		`"200, 204 ,300-302"`:    "200,204,300-302",
		`[ "100-199", "5-500" ]`: "100-199,5-500",
	} {
		c := HealthCheck{}
		doc := "backends: [{name: b, health_check: {type: http, expect_status: " + in + "}}]"
		cfg, err := Parse([]byte(doc))
		if in == `[ "100-199", "5-500" ]` {
			if err == nil || !strings.Contains(err.Error(), "backends[0].health_check.expect_status: invalid status range 5-500") {
				t.Errorf("%s: got %v", in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		c = *cfg.Backends[0].HealthCheck
		if got := c.ExpectStatus.String(); got != want {
			t.Errorf("%s: got %s want %s", in, got, want)
		}
		// JSON round trip, as a string and as a list.
		b, _ := json.Marshal(c.ExpectStatus)
		var back StatusSet
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, c.ExpectStatus) {
			t.Errorf("json %s: %v %v", b, back, err)
		}
	}
	var s StatusSet
	if err := json.Unmarshal([]byte(`[200, "300-399"]`), &s); err != nil || !s.Contains(200) || !s.Contains(301) || s.Contains(204) {
		t.Errorf("json list: %v %v", s, err)
	}
	for _, bad := range []string{`"2xx"`, `{a: 1}`, `[[200]]`, `"200-"`} {
		if _, err := Parse([]byte("backends: [{name: b, health_check: {type: http, expect_status: " + bad + "}}]")); err == nil {
			t.Errorf("expect_status %s accepted", bad)
		}
	}
}

func TestHealthCheckFaultsByPath(t *testing.T) {
	_, err := Parse([]byte(`
backends:
  - name: app
    health_check:
      type: http
      rise: -1
      interval: 2s
      timeout: 3s
      expect_body: "ok("
      expect_body_regex: true
      headers: {Host: x, "bad name": y}
      on_error: explode
      tcp_send: [PING]
    servers:
      - {name: a, address: "127.0.0.1:80", check: true, health_check: {interval: 5s}}
      - {name: b, address: "127.0.0.1:81", check: true, health_check: {fall: -2, timeout: 500ms}}
      - {name: c, address: "127.0.0.1:82", agent_port: 70000}
  - name: tcp
    health_check: {type: smtp, path: /x, interval: 1ms}
    servers:
      - {name: d, address: "127.0.0.1:80", check: true, health_check: {type: tcp, interval: 100ms, timeout: 1s}}
`))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		`backends[0].health_check.rise: must be >= 1`,
		`backends[0].health_check.timeout: must be <= interval (2s), got 3s`,
		`backends[0].health_check.expect_body: invalid regular expression`,
		`backends[0].health_check.headers: header "Host" not allowed: set it with host`,
		`backends[0].health_check.headers: invalid header name "bad name"`,
		`backends[0].health_check.on_error: unknown value "explode"`,
		`backends[0].health_check.tcp_send: needs type tcp`,
		`backends[0].servers[1].health_check.fall: must be >= 1`,
		`backends[0].servers[2].agent_port: invalid port 70000`,
		`backends[1].health_check.type: unknown check type "smtp"`,
		`backends[1].health_check.path: needs type http`,
		`backends[1].health_check.interval: must be at least 10ms, got 1ms`,
		`backends[1].health_check.fast_interval: must be at least 10ms`,
		`backends[1].health_check.down_interval: must be at least 10ms`,
		`backends[1].servers[0].health_check.timeout: must be <= interval (100ms), got 1s`,
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing fault %q in:\n%s", w, got)
		}
	}
	if len(es) != len(want) {
		t.Errorf("got %d faults, want %d (inherited faults must be reported once):\n%s", len(es), len(want), got)
	}
}

func TestServerCheckMerge(t *testing.T) {
	c, err := Parse([]byte(`
backends:
  - name: app
    health_check: {type: http, path: /hz, https: true, headers: {X-A: "1"}, interval: 4s, rise: 5}
    servers:
      - {name: a, address: "h:1", check: true, health_check: {https: false, headers: {X-B: "2"}, fall: 7}}
      - {name: b, address: "h:2", check: true, health_check: {type: tcp, tcp_send: [PING], tcp_expect: [PONG]}}
      - {name: c, address: "h:3", check: true, health_check: {interval: 1s}}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := &c.Backends[0]
	a, _ := ServerCheck(b, &b.Servers[0])
	if a.IsHTTPS() || a.Path != "/hz" || a.Rise != 5 || a.Fall != 7 || !reflect.DeepEqual(a.Headers, map[string]string{"X-B": "2"}) {
		t.Errorf("merged a: %+v", a)
	}
	tcp, _ := ServerCheck(b, &b.Servers[1])
	if tcp.Type != CheckTCP || tcp.Path != "" || tcp.Method != "" || tcp.IsHTTPS() || tcp.Interval.D() != 4*time.Second || tcp.Rise != 5 {
		t.Errorf("type-changing override kept http fields or lost timing: %+v", tcp)
	}
	fast, _ := ServerCheck(b, &b.Servers[2])
	// fast_interval follows the server's interval, since the backend
	// left it to its default.
	if fast.Interval.D() != time.Second || fast.FastInterval.D() != time.Second {
		t.Errorf("merged c: interval %s fast %s", fast.Interval, fast.FastInterval)
	}
	if *b.Servers[0].HealthCheck.HTTPS || b.Servers[0].HealthCheck.Path != "" {
		t.Errorf("override rewritten in place: %+v", b.Servers[0].HealthCheck)
	}
}

// The effective checks must not change under a second ApplyDefaults or a
// JSON round trip (a replicated config): the health state of a server is
// keyed by its check, and a drifting check would reset it on reload.
func TestServerCheckIsStable(t *testing.T) {
	c, err := Parse([]byte(`
backends:
  - name: app
    health_check: {type: http, https: true, interval: 3s}
    servers:
      - {name: a, address: "h:1", check: true, health_check: {https: false, interval: 1s}}
      - {name: b, address: "h:2", check: true, health_check: {type: tls}}
      - {name: c, address: "h:3", check: true, agent_port: 99}
  - name: bare
    servers: [{name: d, address: "h:4", check: true, health_check: {type: http, expect_status: 204}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	checks := func(c *Config) []HealthCheck {
		var out []HealthCheck
		for i := range c.Backends {
			for j := range c.Backends[i].Servers {
				hc, _ := ServerCheck(&c.Backends[i], &c.Backends[i].Servers[j])
				out = append(out, hc)
			}
		}
		return out
	}
	first := checks(c)
	c.ApplyDefaults()
	if second := checks(c); !reflect.DeepEqual(first, second) {
		t.Errorf("ApplyDefaults changed effective checks:\n%+v\n%+v", first, second)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	back.ApplyDefaults()
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
	if third := checks(&back); !reflect.DeepEqual(first, third) {
		t.Errorf("JSON round trip changed effective checks:\n%+v\n%+v", first, third)
	}
}

// TestCheckTimeoutFollowsShortInterval: with no timeout set, a check is
// bounded by its interval when that is under the 1s default, as HAProxy
// bounds it by inter.
func TestCheckTimeoutFollowsShortInterval(t *testing.T) {
	c, err := Parse([]byte(`
backends:
  - name: app
    health_check: {type: http, interval: 200ms}
    servers: [{name: a, address: "127.0.0.1:80", check: true}]
`))
	if err != nil {
		t.Fatal(err)
	}
	hc, _ := ServerCheck(&c.Backends[0], &c.Backends[0].Servers[0])
	if hc.Timeout.D() != 200*time.Millisecond {
		t.Errorf("timeout %v, want 200ms", hc.Timeout)
	}
}
