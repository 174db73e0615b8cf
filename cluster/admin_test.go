package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/health"
)

func testClient(t *testing.T, socket string) *AdminClient {
	c := NewAdminClient(socket)
	t.Cleanup(c.Close)
	return c
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAdminSocketFileModes(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	fi, err := os.Lstat(n.cfg.Admin.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(n.cfg.Admin.Socket))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm()&^0o750 != 0 {
		t.Errorf("created socket dir mode %v, want at most 0750", di.Mode().Perm())
	}
}

func TestAdminHealthStatsConfig(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	c := testClient(t, n.cfg.Admin.Socket)
	ctx := callCtx(t)

	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h != (Health{Status: "ok", Node: "lb1", Version: "v1.2.3-test"}) {
		t.Errorf("health %+v", h)
	}

	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The engine reports the running config's proxies (a stub engine none).
	if len(st.Backends) > 0 && (st.Backends[0].Name != "app" || len(st.Backends[0].Servers) != 1) {
		t.Errorf("stats %+v", st)
	}
	raw, err := c.StatsJSON(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil || keys["frontends"] == nil || keys["backends"] == nil {
		t.Errorf("stats JSON %s: %v", raw, err)
	}

	rc, err := c.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Source != n.cfg.ProxyConfig || rc.LoadedAt.IsZero() || len(rc.Config.Backends) != 1 ||
		rc.Config.Backends[0].Name != "app" || rc.Config.Global.HardStopAfter.D() != 30*time.Second {
		t.Errorf("config %+v", rc)
	}
}

func TestAdminReload(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	c := testClient(t, n.cfg.Admin.Socket)
	ctx := callCtx(t)

	writeFile(t, n.cfg.ProxyConfig, backendsOnly+"  - name: two\n    servers: []\n")
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if rc, err := c.Config(ctx); err != nil || len(rc.Config.Backends) != 2 {
		t.Fatalf("config after reload: %+v, %v", rc, err)
	}

	// An invalid file: 422 with every fault, and the agent keeps serving
	// the config it had.
	writeFile(t, n.cfg.ProxyConfig, invalidConfig)
	err := c.Reload(ctx)
	ae, ok := errors.AsType[*APIError](err)
	if !ok {
		t.Fatalf("want *APIError, got %v", err)
	}
	if ae.Status != http.StatusUnprocessableEntity || ae.Code != CodeInvalidConfig || ae.Message == "" || len(ae.Faults) != 2 {
		t.Fatalf("got %+v", ae)
	}
	if f := ae.Faults[1]; f.Path != "backends[1].servers[0].address" || f.Msg != "missing port" {
		t.Errorf("fault %+v", f)
	}
	if _, err := c.Health(ctx); err != nil {
		t.Errorf("health after refused reload: %v", err)
	}
	if rc, err := c.Config(ctx); err != nil || len(rc.Config.Backends) != 2 {
		t.Errorf("config after refused reload: %+v, %v", rc, err)
	}

	// Undecodable: 422 with a message and no faults.
	writeFile(t, n.cfg.ProxyConfig, "frontends: {}\n")
	ae, ok = errors.AsType[*APIError](c.Reload(ctx))
	if !ok || ae.Code != CodeInvalidConfig || len(ae.Faults) != 0 || !strings.Contains(ae.Message, "decode") {
		t.Errorf("got %+v", ae)
	}
}

// TestAdminErrorWireForm checks the raw error body: a code and a message,
// never an empty object.
func TestAdminErrorWireForm(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	writeFile(t, n.cfg.ProxyConfig, invalidConfig)
	c := testClient(t, n.cfg.Admin.Socket)

	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodPost, "/v1/reload", 422, CodeInvalidConfig},
		{http.MethodGet, "/v1/nope", 404, CodeNotFound},
		{http.MethodPost, "/v1/stats", 404, CodeNotFound},
	} {
		req, _ := http.NewRequestWithContext(callCtx(t), tc.method, "http://fulcrum"+tc.path, nil)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var env struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(body, &env); err != nil {
			t.Fatalf("%s %s: %v: %s", tc.method, tc.path, err, body)
		}
		if resp.StatusCode != tc.status || env.Error["code"] != tc.code || env.Error["message"] == "" ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

func TestAdminClientErrors(t *testing.T) {
	c := testClient(t, filepath.Join(t.TempDir(), "absent.sock"))
	_, err := c.Health(callCtx(t))
	if err == nil || !strings.Contains(err.Error(), "cannot reach the agent") || !strings.Contains(err.Error(), "absent.sock") {
		t.Errorf("got %v", err)
	}
}

func TestAdminReplacesStaleSocketRefusesLiveOne(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	sock := n.cfg.Admin.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		t.Fatal(err)
	}

	// A live socket: someone serves there; the agent must not steal it.
	live, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.agent.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("Run on a live socket: %v", err)
	}

	// The same socket left behind by a dead process.
	live.SetUnlinkOnClose(false)
	live.Close()
	n2 := newTestNode(t, backendsOnly)
	n2.cfg.Admin.Socket = sock
	n2.agent.cfg.Admin.Socket = sock
	n2.start(t)
	if _, err := testClient(t, sock).Health(callCtx(t)); err != nil {
		t.Fatal(err)
	}

	// Not a socket at all: refused, and left alone.
	if err := n2.stop(t); err != nil {
		t.Fatal(err)
	}
	writeFile(t, sock, "precious")
	n3 := newTestNode(t, backendsOnly)
	n3.agent.cfg.Admin.Socket = sock
	if err := n3.agent.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run on a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "precious" {
		t.Error("regular file at the socket path was touched")
	}
}

func TestAdminServers(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	c := testClient(t, n.cfg.Admin.Socket)
	ctx := callCtx(t)

	servers, err := c.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].Backend != "app" || servers[0].Server != "app1" || servers[0].State != "UP" ||
		servers[0].Admin != "READY" || servers[0].Weight != 1 || servers[0].WeightOverride != -1 || servers[0].Checked {
		t.Fatalf("servers %+v", servers)
	}
	for _, tc := range []struct {
		admin      health.Admin
		state, adm string
	}{
		{health.AdminMaint, "MAINT", "MAINT"},
		{health.AdminDrain, "DRAIN", "DRAIN"},
		{health.AdminReady, "UP", "READY"},
	} {
		st, err := c.SetServerAdmin(ctx, "app", "app1", tc.admin)
		if err != nil || st.State != tc.state || st.Admin != tc.adm {
			t.Errorf("set %v: %+v, %v", tc.admin, st, err)
		}
		if got, err := c.Server(ctx, "app", "app1"); err != nil || got.State != tc.state {
			t.Errorf("after set %v: %+v, %v", tc.admin, got, err)
		}
	}
	if st, err := c.SetServerWeight(ctx, "app", "app1", 3); err != nil || st.Weight != 3 || st.WeightOverride != 3 || st.ConfiguredWeight != 1 {
		t.Errorf("weight 3: %+v, %v", st, err)
	}
	if st, err := c.SetServerWeight(ctx, "app", "app1", 0); err != nil || st.Weight != 0 || st.WeightOverride != 0 {
		t.Errorf("weight 0: %+v, %v", st, err)
	}
	if st, err := c.ResetServerWeight(ctx, "app", "app1"); err != nil || st.Weight != 1 || st.WeightOverride != -1 {
		t.Errorf("reset: %+v, %v", st, err)
	}

	// Unknown names: 404 naming what is missing.
	_, err = c.SetServerAdmin(ctx, "app", "nope", health.AdminMaint)
	if ae, ok := errors.AsType[*APIError](err); !ok || ae.Status != 404 || ae.Code != CodeNotFound || ae.Message != `no server "nope" in backend "app"` {
		t.Errorf("unknown server: %v", err)
	}
	_, err = c.SetServerWeight(ctx, "web", "app1", 2)
	if ae, ok := errors.AsType[*APIError](err); !ok || ae.Status != 404 || ae.Code != CodeNotFound || !strings.Contains(ae.Message, `no backend "web"`) {
		t.Errorf("unknown backend: %v", err)
	}
	if _, err := c.Server(ctx, "app", "a b/c"); err == nil || !strings.Contains(err.Error(), `no server "a b/c"`) {
		t.Errorf("escaped name: %v", err)
	}

	// The operator's state and weight survive a reload that keeps the
	// server.
	if _, err := c.SetServerAdmin(ctx, "app", "app1", health.AdminMaint); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetServerWeight(ctx, "app", "app1", 5); err != nil {
		t.Fatal(err)
	}
	writeFile(t, n.cfg.ProxyConfig, backendsOnly+"      - {name: app2, address: 127.0.0.1:9002}\n")
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	servers, err = c.Servers(ctx)
	if err != nil || len(servers) != 2 || servers[0].State != "MAINT" || servers[0].Weight != 5 || servers[1].State != "UP" {
		t.Errorf("after reload: %+v, %v", servers, err)
	}
}

// TestAdminServerBodies checks the raw answers to good and bad bodies.
func TestAdminServerBodies(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	c := testClient(t, n.cfg.Admin.Socket)

	for _, tc := range []struct {
		path, body string
		status     int
		want       string // in the error message, or the state or weight on success
	}{
		{"state", `{"admin":"maint"}`, 200, "MAINT"},
		{"state", `{"admin":"READY"}`, 200, "UP"},
		{"state", `{}`, 400, `want {"admin": "ready" | "drain" | "maint"}`},
		{"state", ``, 400, "empty body"},
		{"state", `{"admin":"sleep"}`, 400, `unknown admin state "sleep"`},
		{"state", `{"admin":"maint","why":"x"}`, 400, `unknown field "why"`},
		{"state", `{"admin":"maint"} {}`, 400, "more than one JSON value"},
		{"state", `maint`, 400, "body: invalid character"},
		{"state", `{"admin":"maint"` + strings.Repeat(" ", maxRequestBody) + `}`, 400, "too large"},
		{"weight", `{"weight":3}`, 200, "3"},
		{"weight", `{"weight":null}`, 200, "1"},
		{"weight", `{"weight":256}`, 200, "256"},
		{"weight", `{"reset":true}`, 200, "1"},
		{"weight", `{"weight":null,"reset":true}`, 200, "1"},
		{"weight", `{}`, 400, `want {"weight": N}`},
		{"weight", `{"reset":false}`, 400, `want {"weight": N}`},
		{"weight", `{"weight":-1}`, 400, "weight -1 out of range"},
		{"weight", `{"weight":257}`, 400, "weight 257 out of range"},
		{"weight", `{"weight":1.5}`, 400, "weight 1.5 is not an integer"},
		{"weight", `{"weight":"3"}`, 400, `weight "3" is not an integer`},
		{"weight", `{"weight":3,"reset":true}`, 400, "both a weight and reset"},
		{"weight", `{"reset":"yes"}`, 400, "reset must be true or false"},
		{"weight", `{"factor":2}`, 400, `unknown field "factor"`},
		{"weight", `[3]`, 400, "body: json: cannot unmarshal array"},
	} {
		req, _ := http.NewRequestWithContext(callCtx(t), http.MethodPost, "http://fulcrum/v1/servers/app/app1/"+tc.path, strings.NewReader(tc.body))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		name := tc.path + " " + tc.body
		if len(name) > 60 {
			name = name[:60] + "..."
		}
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d: %s", name, resp.StatusCode, tc.status, body)
			continue
		}
		if tc.status == 200 {
			var st struct {
				State  string `json:"state"`
				Weight int    `json:"weight"`
			}
			if err := json.Unmarshal(body, &st); err != nil || (st.State != tc.want && strconv.Itoa(st.Weight) != tc.want) {
				t.Errorf("%s: %s, want %s", name, body, tc.want)
			}
			continue
		}
		var env struct {
			Error APIError `json:"error"`
		}
		if err := json.Unmarshal(body, &env); err != nil || env.Error.Code != CodeBadRequest || !strings.Contains(env.Error.Message, tc.want) {
			t.Errorf("%s: %s, want code bad_request and %q", name, body, tc.want)
		}
	}

	// GET on a POST endpoint, POST on the list: not found, as elsewhere.
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/servers/app/app1/state"},
		{http.MethodPost, "/v1/servers"},
		{http.MethodPost, "/v1/servers/app/app1/nope"},
	} {
		req, _ := http.NewRequestWithContext(callCtx(t), tc.method, "http://fulcrum"+tc.path, strings.NewReader("{}"))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(body), CodeNotFound) {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, resp.StatusCode, body)
		}
	}
}

// TestServerStateWireNames: ServerState reads health.ServerStatus under
// the same JSON names, so a renamed field cannot silently read as zero.
func TestServerStateWireNames(t *testing.T) {
	in := health.ServerStatus{
		Backend: "b", Server: "s", Address: "127.0.0.1:1", Backup: true, State: health.StateDrain,
		Admin: health.AdminMaint, AgentAdmin: health.AdminDrain, Checked: true, Health: 2, Rise: 3, Fall: 4,
		Weight: 5, ConfiguredWeight: 6, WeightOverride: 7, AgentWeight: 8, ChkFail: 9, ChkDown: 10,
		LastAgent: &health.Result{Agent: &health.AgentReply{Admin: health.AdminDrain, SetAdmin: true}},
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ServerState
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	want := ServerState{
		Backend: "b", Server: "s", Address: "127.0.0.1:1", Backup: true, State: "DRAIN", Admin: "MAINT",
		AgentAdmin: "DRAIN", Checked: true, Health: 2, Rise: 3, Fall: 4, Weight: 5, ConfiguredWeight: 6,
		WeightOverride: 7, AgentWeight: 8, ChkFail: 9, ChkDown: 10,
	}
	if out != want {
		t.Errorf("decoded %+v\nwant    %+v\nfrom %s", out, want, b)
	}
}

// TestAdminProfiles: the socket serves Go's profiles (make profile uses
// them under the benchmark load).
func TestAdminProfiles(t *testing.T) {
	n := newTestNode(t, backendsOnly)
	n.start(t)
	c := testClient(t, n.cfg.Admin.Socket)
	for path, want := range map[string]string{
		"/debug/pprof/":                    "goroutine",
		"/debug/pprof/goroutine?debug=1":   "goroutine profile: total",
		"/debug/pprof/profile?seconds=1":   "", // a gzipped protobuf
		"/debug/pprof/allocs?debug=0&gc=1": "",
	} {
		req, _ := http.NewRequestWithContext(callCtx(t), http.MethodGet, "http://fulcrum"+path, nil)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(body) == 0 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, %d bytes, want 200 with %q", path, resp.StatusCode, len(body), want)
		}
	}
}
