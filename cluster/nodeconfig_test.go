package cluster

import (
	"bytes"
	"errors"
	"net"
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
		VIP:         defaultVIPSection(defaultBindAddr()),
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
		VIP:         defaultVIPSection(defaultBindAddr()),
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

// defaultVIPSection is the vip section a node bound to bindAddr gets by
// default.
func defaultVIPSection(bindAddr string) VIPSection {
	v := VIPSection{Interface: interfaceHolding(bindAddr), Priority: DefaultVIPPriority}
	if ip := net.ParseIP(bindAddr); ip != nil && ip.To4() != nil {
		v.BGP.RouterID = bindAddr
	}
	return v
}

func TestLoadNodeConfigVIPDefaultsFollowBindAddr(t *testing.T) {
	clearEnv(t)
	lo := loopbackName(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), "node: {name: lb1}\ncluster: {bind_addr: 127.0.0.1}\n")
	c, err := LoadNodeConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := VIPSection{Interface: lo, Priority: 100, BGP: VIPBGPSection{RouterID: "127.0.0.1"}}
	if c.VIP != want {
		t.Errorf("got  %+v\nwant %+v", c.VIP, want)
	}

	// No interface holds the bind address (TEST-NET-1), or it is IPv6:
	// no interface, and no IPv6 router id.
	path = writeFile(t, path, "node: {name: lb1}\ncluster: {bind_addr: 192.0.2.77}\n")
	if c, err = LoadNodeConfig(path, nil); err != nil || c.VIP.Interface != "" || c.VIP.BGP.RouterID != "192.0.2.77" {
		t.Errorf("unheld bind address: %+v, %v", c.VIP, err)
	}
	path = writeFile(t, path, "node: {name: lb1}\ncluster: {bind_addr: \"2001:db8::7\"}\n")
	if c, err = LoadNodeConfig(path, nil); err != nil || c.VIP.Interface != "" || c.VIP.BGP.RouterID != "" {
		t.Errorf("IPv6 bind address: %+v, %v", c.VIP, err)
	}
}

func TestLoadNodeConfigVIPSection(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), `
node: {name: lb1}
vip:
  interface: eth1
  priority: 0
  bgp: {local_asn: 4200000001, router_id: 10.0.0.11}
`)
	c, err := LoadNodeConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := VIPSection{Interface: "eth1", Priority: 0, BGP: VIPBGPSection{LocalASN: 4200000001, RouterID: "10.0.0.11"}}
	if c.VIP != want {
		t.Errorf("got  %+v\nwant %+v", c.VIP, want)
	}

	t.Setenv("FULCRUM_VIP_PRIORITY", "150")
	t.Setenv("FULCRUM_VIP_BGP_LOCAL_ASN", "65001")
	c, err = LoadNodeConfig(path, map[string]string{"vip.interface": "bond0"})
	if err != nil {
		t.Fatal(err)
	}
	if c.VIP.Priority != 150 || c.VIP.BGP.LocalASN != 65001 || c.VIP.Interface != "bond0" {
		t.Errorf("env and overrides not applied: %+v", c.VIP)
	}
}

func TestLoadNodeConfigVIPValidation(t *testing.T) {
	clearEnv(t)
	path := writeFile(t, filepath.Join(t.TempDir(), "node.yaml"), `
node: {name: lb1}
vip:
  interface: "eth0:1"
  priority: 256
  bgp: {local_asn: 4294967296, router_id: "fd00::11"}
`)
	_, err := LoadNodeConfig(path, nil)
	es, ok := errors.AsType[state.Errors](err)
	if !ok {
		t.Fatalf("want state.Errors, got %v", err)
	}
	want := []string{
		`vip.interface: invalid interface name "eth0:1"`,
		"vip.priority: must be between 0 and 255, got 256",
		"vip.bgp.local_asn: must be between 0 (unset) and 4294967295, got 4294967296",
		`vip.bgp.router_id: "fd00::11" is not an IPv4 address`,
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if len(es) != len(want) {
		t.Errorf("got %d faults, want %d:\n%v", len(es), len(want), err)
	}

	for name, msg := range map[string]string{"": "", "eth0": "", "br-lan.100": "", "averyverylongname": "longer than 15", "a/b": "invalid", "..": "invalid", "a b": "invalid"} {
		if got := checkInterfaceName(name); msg == "" && got != "" || !strings.Contains(got, msg) {
			t.Errorf("checkInterfaceName(%q) = %q, want %q", name, got, msg)
		}
	}

	path = writeFile(t, path, "node: {name: lb1}\nvip: {bgp: 65001}\n")
	if _, err := LoadNodeConfig(path, nil); err == nil || err.Error() != "vip.bgp: must be a mapping" {
		t.Errorf("scalar bgp section: %v", err)
	}
}

// loopbackName is the name of this host's loopback interface.
func loopbackName(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagLoopback != 0 {
			return ifc.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}
