// Package cluster owns a Fulcrum node's lifecycle: the node config, the agent
// that loads the proxy config into the engine and reloads it, the systemd
// notifications around that, and the admin API on the node's unix socket
// (with its client). Later it grows the Raft and gossip wiring; it may import
// state and proxy, never the other way round.
package cluster

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/viper"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Defaults of the node config.
const (
	DefaultNodeConfigPath = "/etc/fulcrum/fulcrum.yaml"
	DefaultDataDir        = "/var/lib/fulcrum"
	DefaultAdminSocket    = "/run/fulcrum/admin.sock"
	DefaultProxyConfig    = "/etc/fulcrum/lb.yaml"
	DefaultLogLevel       = "info"
	DefaultLogFormat      = "text"
	DefaultRole           = "voter"
	DefaultRaftPort       = 7380
	DefaultGossipPort     = 7946
	DefaultAPIPort        = 7443
	DefaultVIPPriority    = 100
)

// EnvPrefix prefixes the environment variables that set node config keys:
// FULCRUM_ADMIN_SOCKET sets admin.socket, FULCRUM_NODE_DATA_DIR node.data_dir.
const EnvPrefix = "FULCRUM"

// maxSocketPath is the longest path a unix socket address can hold on Linux
// (sun_path is 108 bytes, one of them the terminating NUL).
const maxSocketPath = 107

// NodeConfig is this node's own settings (as opposed to the proxy config that
// a cluster replicates). It is a plain value: LoadNodeConfig builds it once,
// and nothing changes it afterwards.
type NodeConfig struct {
	Node  NodeSection  `mapstructure:"node"`
	Admin AdminSection `mapstructure:"admin"`
	// ProxyConfig is the proxy config file of a standalone node.
	ProxyConfig string     `mapstructure:"proxy_config"`
	Log         LogSection `mapstructure:"log"`
	// Cluster is where this node speaks Raft, gossip and the node API.
	Cluster ClusterSection `mapstructure:"cluster"`
	// VIP is this node's part in holding the virtual IPs; the cluster-wide
	// settings are the proxy config's vip section.
	VIP VIPSection `mapstructure:"vip"`

	// File is the node config file the value was loaded from, or "" when it
	// came from defaults and the environment alone.
	File string `mapstructure:"-"`
}

// NodeSection identifies the node.
type NodeSection struct {
	Name    string `mapstructure:"name"`
	DataDir string `mapstructure:"data_dir"`
	// Role is voter, or witness: a voter that runs no proxy and holds no VIP.
	Role string `mapstructure:"role"`
}

// ClusterSection holds the addresses a clustered node uses.
type ClusterSection struct {
	// BindAddr defaults to the address of the interface that holds the
	// default route (loopback when there is none).
	BindAddr   string `mapstructure:"bind_addr"`
	RaftPort   int    `mapstructure:"raft_port"`
	GossipPort int    `mapstructure:"gossip_port"`
	APIPort    int    `mapstructure:"api_port"`
}

// RaftAddr, GossipAddr and APIAddr are host:port of each listener.
func (c ClusterSection) RaftAddr() string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(c.RaftPort))
}
func (c ClusterSection) GossipAddr() string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(c.GossipPort))
}
func (c ClusterSection) APIAddr() string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(c.APIPort))
}

// defaultBindAddr is the source address of the default route: connecting
// a UDP socket picks the route and sends nothing.
func defaultBindAddr() string {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// VIPSection holds this node's VIP settings. They travel to the other nodes
// in gossip metadata.
type VIPSection struct {
	// Interface carries an active-passive VIP. It defaults to the interface
	// that holds cluster.bind_addr ("" when none does).
	Interface string `mapstructure:"interface"`
	// Priority ranks the node as VIP owner (0-255, default 100): the
	// preferred owner is the fit node with the highest priority.
	Priority int           `mapstructure:"priority"`
	BGP      VIPBGPSection `mapstructure:"bgp"`
}

// VIPBGPSection is this node's BGP identity (active-active).
type VIPBGPSection struct {
	// LocalASN is this node's AS number (0: unset).
	LocalASN int64 `mapstructure:"local_asn"`
	// RouterID is the BGP identifier, an IPv4 address. It defaults to
	// cluster.bind_addr when that is IPv4.
	RouterID string `mapstructure:"router_id"`
}

// maxInterfaceName is the longest Linux interface name (IFNAMSIZ less the
// terminating NUL).
const maxInterfaceName = 15

// interfaceHolding returns the name of the interface that has addr, or ""
// when none has it (or addr is not a specific IP address).
func interfaceHolding(addr string) string {
	ip := net.ParseIP(addr)
	if ip == nil || ip.IsUnspecified() {
		return ""
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, ifc := range ifaces {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return ifc.Name
			}
		}
	}
	return ""
}

// AdminSection configures the admin API.
type AdminSection struct {
	// Socket is the unix socket the admin API listens on.
	Socket string `mapstructure:"socket"`
}

// LogSection configures the agent's log.
type LogSection struct {
	Level  string `mapstructure:"level"`  // debug | info | warn | error
	Format string `mapstructure:"format"` // text | json
}

// knownKeys lists every node config key. Each is bound to its environment
// variable, so the environment works for keys the file does not mention.
var knownKeys = []string{
	"node.name",
	"node.data_dir",
	"node.role",
	"admin.socket",
	"proxy_config",
	"log.level",
	"log.format",
	"cluster.bind_addr",
	"cluster.raft_port",
	"cluster.gossip_port",
	"cluster.api_port",
	"vip.interface",
	"vip.priority",
	"vip.bgp.local_asn",
	"vip.bgp.router_id",
}

// LoadNodeConfig reads the node config from the YAML file at path (skipped
// when path is ""), the FULCRUM_* environment and the built-in defaults,
// decodes it strictly, resolves relative paths against the file's directory
// and validates it. set holds overrides with the highest priority (command
// line flags), keyed like the file ("admin.socket"); their paths must already
// be absolute or relative to the working directory.
func LoadNodeConfig(path string, set map[string]string) (NodeConfig, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	for _, k := range knownKeys {
		if err := v.BindEnv(k); err != nil {
			return NodeConfig{}, err
		}
	}
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	v.SetDefault("node.name", host)
	v.SetDefault("node.data_dir", DefaultDataDir)
	v.SetDefault("admin.socket", DefaultAdminSocket)
	v.SetDefault("proxy_config", DefaultProxyConfig)
	v.SetDefault("log.level", DefaultLogLevel)
	v.SetDefault("log.format", DefaultLogFormat)
	v.SetDefault("node.role", DefaultRole)
	v.SetDefault("cluster.raft_port", DefaultRaftPort)
	v.SetDefault("cluster.gossip_port", DefaultGossipPort)
	v.SetDefault("cluster.api_port", DefaultAPIPort)
	v.SetDefault("vip.priority", DefaultVIPPriority)

	var base string
	if path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			return NodeConfig{}, err
		}
		data, err := os.ReadFile(abs)
		if err != nil {
			return NodeConfig{}, err
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			return NodeConfig{}, fmt.Errorf("%s: %w", path, err)
		}
		path, base = abs, filepath.Dir(abs)
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if !slices.Contains(knownKeys, k) {
			return NodeConfig{}, fmt.Errorf("%s: unknown key", k)
		}
		v.Set(k, set[k])
	}
	if unknown := unknownKeys(v.AllKeys()); len(unknown) > 0 {
		es := make(state.Errors, len(unknown))
		for i, k := range unknown {
			es[i] = state.FieldError{Path: k, Msg: "unknown key"}
			if slices.ContainsFunc(knownKeys, func(known string) bool { return strings.HasPrefix(known, k+".") }) {
				es[i].Msg = "must be a mapping"
			}
		}
		return NodeConfig{}, es
	}

	var c NodeConfig
	if err := v.UnmarshalExact(&c); err != nil {
		return NodeConfig{}, fmt.Errorf("decode: %w", err)
	}
	c.File = path
	if c.Cluster.BindAddr == "" {
		c.Cluster.BindAddr = defaultBindAddr()
	}
	if c.VIP.Interface == "" {
		c.VIP.Interface = interfaceHolding(c.Cluster.BindAddr)
	}
	if ip := net.ParseIP(c.Cluster.BindAddr); c.VIP.BGP.RouterID == "" && ip != nil && ip.To4() != nil {
		c.VIP.BGP.RouterID = c.Cluster.BindAddr
	}
	c.resolvePaths(base, set)
	if err := c.Validate(); err != nil {
		return NodeConfig{}, err
	}
	return c, nil
}

// unknownKeys returns the keys that are not node config keys, sorted. Viper
// flattens nested maps, so "node.bogus" and "cluster.raft.port" show up as
// such.
func unknownKeys(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !slices.Contains(knownKeys, k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// resolvePaths makes the file paths absolute: those from the file or the
// environment against base (the node config file's directory), overrides
// against the working directory.
func (c *NodeConfig) resolvePaths(base string, set map[string]string) {
	for key, p := range map[string]*string{
		"admin.socket":  &c.Admin.Socket,
		"proxy_config":  &c.ProxyConfig,
		"node.data_dir": &c.Node.DataDir,
	} {
		if *p == "" || filepath.IsAbs(*p) {
			continue
		}
		b := base
		if _, override := set[key]; override || b == "" {
			if wd, err := os.Getwd(); err == nil {
				b = wd
			}
		}
		*p = filepath.Join(b, *p)
	}
}

// Validate checks the node config and returns every fault as state.Errors
// (`admin.socket: missing`), or nil.
func (c NodeConfig) Validate() error {
	var es state.Errors
	add := func(path, format string, args ...any) {
		es = append(es, state.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case c.Node.Name == "":
		add("node.name", "missing (and the host name is unknown)")
	case !validNodeName(c.Node.Name):
		add("node.name", "invalid name %q (letters, digits, '-', '_', '.', at most 64)", c.Node.Name)
	}
	if c.Node.DataDir == "" {
		add("node.data_dir", "missing")
	}
	switch {
	case c.Admin.Socket == "":
		add("admin.socket", "missing")
	case len(c.Admin.Socket) > maxSocketPath:
		add("admin.socket", "path is %d bytes, a unix socket path holds at most %d", len(c.Admin.Socket), maxSocketPath)
	}
	if c.ProxyConfig == "" {
		add("proxy_config", "missing")
	}
	if _, err := ParseLogLevel(c.Log.Level); err != nil {
		add("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		add("log.format", "unknown format %q (want text or json)", c.Log.Format)
	}
	if c.Node.Role != "voter" && c.Node.Role != "witness" {
		add("node.role", "unknown role %q (want voter or witness)", c.Node.Role)
	}
	if net.ParseIP(c.Cluster.BindAddr) == nil {
		add("cluster.bind_addr", "%q is not an IP address", c.Cluster.BindAddr)
	}
	ports := map[int]string{}
	for _, p := range []struct {
		key  string
		port int
	}{{"cluster.raft_port", c.Cluster.RaftPort}, {"cluster.gossip_port", c.Cluster.GossipPort}, {"cluster.api_port", c.Cluster.APIPort}} {
		switch {
		case p.port < 1 || p.port > 65535:
			add(p.key, "invalid port %d (want 1-65535)", p.port)
		case ports[p.port] != "":
			add(p.key, "port %d is already %s", p.port, ports[p.port])
		default:
			ports[p.port] = p.key
		}
	}
	if msg := checkInterfaceName(c.VIP.Interface); msg != "" {
		add("vip.interface", "%s", msg)
	}
	if c.VIP.Priority < 0 || c.VIP.Priority > 255 {
		add("vip.priority", "must be between 0 and 255, got %d", c.VIP.Priority)
	}
	if c.VIP.BGP.LocalASN < 0 || c.VIP.BGP.LocalASN > math.MaxUint32 {
		add("vip.bgp.local_asn", "must be between 0 (unset) and %d, got %d", uint32(math.MaxUint32), c.VIP.BGP.LocalASN)
	}
	if id := c.VIP.BGP.RouterID; id != "" {
		if ip := net.ParseIP(id); ip == nil || ip.To4() == nil || ip.IsUnspecified() {
			add("vip.bgp.router_id", "%q is not an IPv4 address", id)
		}
	}
	if len(es) == 0 {
		return nil
	}
	return es
}

// checkInterfaceName returns why name cannot be a Linux interface name, or
// "". The empty name (no interface) passes.
func checkInterfaceName(name string) string {
	switch {
	case name == "":
		return ""
	case len(name) > maxInterfaceName:
		return fmt.Sprintf("%q is longer than %d bytes", name, maxInterfaceName)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return fmt.Sprintf("invalid interface name %q", name)
	}
	return ""
}

func validNodeName(s string) bool {
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return s != "" && len(s) <= 64
}

// ParseLogLevel parses debug, info, warn or error.
func ParseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown level %q (want debug, info, warn or error)", s)
}

// NewLogger builds the logger the section describes, writing to w. An
// invalid section (which Validate refuses) logs at info in text.
func (l LogSection) NewLogger(w io.Writer) *slog.Logger {
	level, err := ParseLogLevel(l.Level)
	if err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
