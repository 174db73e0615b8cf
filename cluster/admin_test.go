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
	"strings"
	"testing"
	"time"
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
