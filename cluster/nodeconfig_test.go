package cluster

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fulcrum-lb/fulcrum/state"
)

// clearEnv keeps the caller's FULCRUM_* environment out of a test (viper
// ignores empty variables).
func clearEnv(t *testing.T) {
	for _, k := range knownKeys {
		t.Setenv("FULCRUM_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")), "")
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadNodeConfigDefaults(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "fulcrum.yaml"), "")
	c, err := LoadNodeConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	want := NodeConfig{
		Node:        NodeSection{Name: host, DataDir: DefaultDataDir, Role: "voter"},
		Admin:       AdminSection{Socket: DefaultAdminSocket},
		ProxyConfig: DefaultProxyConfig,
		Log:         LogSection{Level: "info", Format: "text"},
		Cluster:     ClusterSection{BindAddr: defaultBindAddr(), RaftPort: 7380, GossipPort: 7946, APIPort: 7443},
		File:        path,
	}
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadNodeConfigFileAndRelativePaths(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	path := writeFile(t, filepath.Join(dir, "etc", "node.yaml"), `
node:
  name: lb1
  data_dir: data
admin:
  socket: run/admin.sock
proxy_config: lb.yaml
log:
  level: debug
  format: json
`)
	c, err := LoadNodeConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(dir, "etc")
	want := NodeConfig{
		Node:        NodeSection{Name: "lb1", DataDir: filepath.Join(etc, "data"), Role: "voter"},
		Admin:       AdminSection{Socket: filepath.Join(etc, "run", "admin.sock")},
		ProxyConfig: filepath.Join(etc, "lb.yaml"),
		Log:         LogSection{Level: "debug", Format: "json"},
		Cluster:     ClusterSection{BindAddr: defaultBindAddr(), RaftPort: 7380, GossipPort: 7946, APIPort: 7443},
		File:        path,
	}
	if c != want {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadNodeConfigEnvOverridesFile(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), "node: {name: lb1}\nadmin: {socket: /a/admin.sock}\n")
	t.Setenv("FULCRUM_ADMIN_SOCKET", "/env/admin.sock")       // in the file
	t.Setenv("FULCRUM_LOG_LEVEL", "warn")                     // not in the file
	t.Setenv("FULCRUM_PROXY_CONFIG", "/env/lb.yaml")          // not in the file
	t.Setenv("FULCRUM_NODE_DATA_DIR", "/env/var/lib/fulcrum") // nested, not in the file
	c, err := LoadNodeConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Socket != "/env/admin.sock" || c.Log.Level != "warn" || c.ProxyConfig != "/env/lb.yaml" ||
		c.Node.DataDir != "/env/var/lib/fulcrum" || c.Node.Name != "lb1" {
		t.Errorf("env not applied: %+v", c)
	}

	// Flags (set) win over the environment.
	c, err = LoadNodeConfig(path, map[string]string{"admin.socket": "/flag/admin.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Socket != "/flag/admin.sock" {
		t.Errorf("override not applied: %q", c.Admin.Socket)
	}
}

func TestLoadNodeConfigWithoutFile(t *testing.T) {
	clearEnv(t)
	t.Setenv("FULCRUM_NODE_NAME", "envnode")
	c, err := LoadNodeConfig("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name != "envnode" || c.File != "" || c.Admin.Socket != DefaultAdminSocket {
		t.Errorf("got %+v", c)
	}
}

func TestLoadNodeConfigUnknownKeys(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), `
node:
  name: lb1
  nmae: typo
admni:
  socket: /x
`)
	_, err := LoadNodeConfig(path, nil)
	es, ok := errors.AsType[state.Errors](err)
	if !ok {
		t.Fatalf("want state.Errors, got %v", err)
	}
	want := "admni.socket: unknown key\nnode.nmae: unknown key"
	if es.Error() != want {
		t.Errorf("got %q, want %q", es.Error(), want)
	}

	if _, err := LoadNodeConfig(path, map[string]string{"bogus": "1"}); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown override accepted: %v", err)
	}

	// A scalar where a section belongs.
	path = writeFile(t, path, "admin: /run/admin.sock\n")
	_, err = LoadNodeConfig(path, nil)
	if err == nil || err.Error() != "admin: must be a mapping" {
		t.Errorf("got %v", err)
	}
}

func TestLoadNodeConfigValidation(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), `
node: {name: "lb 1"}
admin: {socket: ""}
log: {level: loud, format: xml}
`)
	_, err := LoadNodeConfig(path, nil)
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		`node.name: invalid name "lb 1"`,
		"admin.socket: missing",
		`log.level: unknown level "loud"`,
		`log.format: unknown format "xml"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}

	long := NodeConfig{
		Node:        NodeSection{Name: "a", DataDir: "/d", Role: "voter"},
		Admin:       AdminSection{Socket: "/" + strings.Repeat("s", 120)},
		ProxyConfig: "/p",
		Log:         LogSection{Level: "info", Format: "text"},
		Cluster:     testClusterSection,
	}
	if err := long.Validate(); err == nil || !strings.HasPrefix(err.Error(), "admin.socket: path is 121 bytes") {
		t.Errorf("long socket path: %v", err)
	}
}

func TestLoadNodeConfigMissingFile(t *testing.T) {
	clearEnv(t)
	_, err := LoadNodeConfig(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("want a not-exist error, got %v", err)
	}
}

func TestLogSectionNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := LogSection{Level: "warn", Format: "json"}.NewLogger(&buf)
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if got := buf.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Errorf("got %q", got)
	}
}
