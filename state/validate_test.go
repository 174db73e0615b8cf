package state

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseEmptyIsValid(t *testing.T) {
	for _, doc := range []string{"", "\n", "# nothing\n", "frontends: []\nbackends: []\n"} {
		c, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse(%q): %v", doc, err)
		}
		if len(c.Frontends) != 0 || c.Global.MaxConn != DefaultGlobalMaxConn {
			t.Errorf("Parse(%q) = %+v", doc, c)
		}
	}
}

func TestParseAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(`
defaults:
  timeouts: {connect: 2s, queue: 250}
  retries: 0
  maxconn: 77
frontends:
  - {name: web, bind: ["127.0.0.1:8080"], default_backend: app}
backends:
  - name: app
    timeouts: {server: 1m}
    servers: [{name: a, address: "app.example:80"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	f, b := c.Frontends[0], c.Backends[0]
	if f.Mode != ModeHTTP || f.MaxConn != 77 {
		t.Errorf("frontend mode %q maxconn %d, want http 77", f.Mode, f.MaxConn)
	}
	if f.Timeouts.Connect.D() != 2*time.Second || f.Timeouts.Client.D() != 30*time.Second {
		t.Errorf("frontend timeouts %+v", f.Timeouts)
	}
	if b.Timeouts.Server.D() != time.Minute || b.Timeouts.Queue.D() != 250*time.Millisecond {
		t.Errorf("backend timeouts %+v", b.Timeouts)
	}
	if *b.Retries != 0 || *b.Redispatch || b.Balance != "roundrobin" || b.HashType != "map-based" {
		t.Errorf("backend defaults: retries %d redispatch %v balance %q hash %q", *b.Retries, *b.Redispatch, b.Balance, b.HashType)
	}
	if b.Servers[0].EffectiveWeight() != 1 {
		t.Errorf("default weight %d, want 1", b.Servers[0].EffectiveWeight())
	}
	if c.Global.MaxHeaderSize != 16<<10 || c.Global.HardStopAfter.D() != 30*time.Second {
		t.Errorf("global defaults %+v", c.Global)
	}
}

func TestValidateListsEveryFaultByPath(t *testing.T) {
	_, err := Parse([]byte(`
global: {max_header_size: 100}
frontends:
  - {name: web, bind: ["127.0.0.1"], default_backend: nope}
  - {name: web, bind: ["example.com:80"], mode: tcp, forwardfor: true, default_backend: app}
  - {name: other, bind: ["127.0.0.1:81"], mode: tcp, default_backend: app}
backends:
  - name: app
    balance: weird
    hash_type: ring
    servers:
      - {name: a, address: "127.0.0.1:80"}
      - {name: a, address: "127.0.0.1:99999", weight: 300}
  - name: web2
    balance: url_param()
    servers:
      - {name: b, address: "127.0.0.1"}
`))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want Errors, got %v", err)
	}
	want := []string{
		"global.max_header_size: must be between 1k and 1m",
		"backends[0].balance: unknown algorithm \"weird\"",
		"backends[0].hash_type: unknown hash type \"ring\"",
		"backends[0].servers[1].name: duplicate server name \"a\"",
		"backends[0].servers[1].address: invalid port \"99999\"",
		"backends[0].servers[1].weight: must be between 0 and 256",
		"backends[1].balance: url_param needs a name",
		"backends[1].servers[0].address: missing port",
		"frontends[0].bind[0]: missing port",
		"frontends[0].default_backend: unknown backend \"nope\"",
		"frontends[1].bind[0]: bind host \"example.com\" is not an IP address",
		"frontends[1].forwardfor: needs mode http",
		"frontends[1].name: duplicate frontend name \"web\"",
		"frontends[2].default_backend: backend \"app\" is mode http, frontend is mode tcp",
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing fault %q in:\n%s", w, got)
		}
	}
	if len(es) != len(want)+1 { // + max_request_line, which exceeds the tiny max_header_size
		t.Errorf("got %d faults, want %d:\n%s", len(es), len(want)+1, got)
	}
}

func TestParseRejectsUnknownKeys(t *testing.T) {
	_, err := Parse([]byte("frontends:\n  - {name: a, bindd: [\"1.2.3.4:80\"]}\n"))
	if err == nil || !strings.Contains(err.Error(), "bindd") {
		t.Fatalf("want an error naming the unknown key, got %v", err)
	}
}

func TestDuplicateBindAcrossFrontends(t *testing.T) {
	_, err := Parse([]byte(`
frontends:
  - {name: a, bind: ["127.0.0.1:80"], default_backend: b}
  - {name: c, bind: ["127.0.0.1:80"], default_backend: b}
backends: [{name: b}]
`))
	if err == nil || !strings.Contains(err.Error(), `frontends[1].bind[0]: address 127.0.0.1:80 already bound by frontend "a"`) {
		t.Fatalf("got %v", err)
	}
}

func TestDurationsAndSizes(t *testing.T) {
	for in, want := range map[string]time.Duration{"5s": 5 * time.Second, "250": 250 * time.Millisecond, "1h30m": 90 * time.Minute, "0": 0} {
		d, err := ParseDuration(in)
		if err != nil || d.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, bad := range []string{"", "-1s", "-5", "soon", "5 parsecs"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
	for in, want := range map[string]Size{"16k": 16384, "1m": 1 << 20, "8192": 8192, "2G": 2 << 30} {
		s, err := ParseSize(in)
		if err != nil || s != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, s, err, want)
		}
	}
	for _, bad := range []string{"", "k", "-1k", "1.5k", "99999999999999g"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestParseBalance(t *testing.T) {
	ok := map[string]Balance{
		"roundrobin":    {Algorithm: "roundrobin"},
		"url_param(id)": {Algorithm: "url_param", Param: "id"},
		"hdr(Host)":     {Algorithm: "hdr", Param: "Host"},
		"random":        {Algorithm: "random", Draws: 2},
		"random(5)":     {Algorithm: "random", Draws: 5},
	}
	for in, want := range ok {
		got, err := ParseBalance(in)
		if err != nil || got != want {
			t.Errorf("ParseBalance(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "rr", "random(0)", "random(x)", "hdr", "hdr()", "url_param(a b)", "leastconn(1)", "uri(", "source()"} {
		if _, err := ParseBalance(bad); err == nil {
			t.Errorf("ParseBalance(%q) accepted", bad)
		}
	}
}

// FuzzParse: any document either parses into a config that validates
// again, unchanged, or is refused with an error; never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("frontends: [{name: a, bind: [\"127.0.0.1:80\"], default_backend: b}]\nbackends: [{name: b, balance: \"hdr(x)\", servers: [{name: s, address: \"h:1\"}]}]\n"))
	f.Add([]byte("global: {max_header_size: 1m, hard_stop_after: 100}\ndefaults: {timeouts: {connect: 1s}}\n"))
	f.Add([]byte("backends: [{name: b, servers: [{name: s, address: \"[::1]:80\", weight: 0}]}]\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse(doc)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config fails validation again: %v", err)
		}
		c.ApplyDefaults()
		if err := c.Validate(); err != nil {
			t.Fatalf("ApplyDefaults is not idempotent: %v", err)
		}
	})
}

func TestHealthVerdictPolicy(t *testing.T) {
	c, err := Parse([]byte("global: {health_verdict: all}\n"))
	if err != nil || c.Global.HealthVerdict != PolicyAll {
		t.Errorf("health_verdict all: %v %v", c, err)
	}
	if c, _ := Parse(nil); c.Global.HealthVerdict != PolicyMajority {
		t.Errorf("default health_verdict %q, want majority", c.Global.HealthVerdict)
	}
	if _, err := Parse([]byte("global: {health_verdict: sometimes}\n")); err == nil || !strings.Contains(err.Error(), "global.health_verdict") {
		t.Errorf("an unknown policy: %v", err)
	}
}
