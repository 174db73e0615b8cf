// Package netlab builds a throw-away multi-node network on one machine from
// Linux network namespaces, for Fulcrum's multi-process end-to-end tests.
//
// A lab is one L2 segment: a switch namespace <name>-sw holding a bridge br0,
// nodes <name>-n1..<name>-nN and a client <name>-c1, each with an eth0 that is
// one end of a veth pair whose other end (named n1.., c1) is a port of br0.
// Every veth pair is created directly between two lab namespaces, so nothing
// appears in the caller's namespace, and no lab namespace has an uplink, so
// no lab traffic can leave the lab.
//
// Addressing, in a /24 chosen per lab (default 10.77.<random>.0/24):
// node I = .(10+I), client = .50, .100 reserved for a VIP (not configured).
// MACs are fixed: 02:77:<third octet>:00:00:<last octet>, all in hex.
//
// Everything a lab creates (namespaces, processes in them) is removed by a
// t.Cleanup registered by New, also when the test fails. The caller must be
// root (see Require).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// MaxNodes is the largest Options.Nodes: node addresses .11-.40 stay below
// the client's .50.
const MaxNodes = 30

// netnsDir is where `ip netns` keeps its named namespaces (a symlink to
// /run/netns on current systems).
const netnsDir = "/var/run/netns"

// Options configures New.
type Options struct {
	// Prefix is the family part of the lab's name ([a-z0-9-], starting with a
	// letter or digit; default "fl"). New always appends a random suffix of
	// 5 characters, so two labs (two tests, two runs) never share names; the
	// result, at most 12 characters, is Lab.Name().
	Prefix string
	// Nodes is the number of nodes, 1..MaxNodes; 0 means 3.
	Nodes int
	// Subnet is the lab's IPv4 /24; the zero value picks 10.77.<random>.0/24.
	Subnet netip.Prefix
	// Sysctls are extra sysctls set in every node and client namespace after
	// the defaults, e.g. {"net.ipv4.conf.all.arp_accept": "1"}.
	Sysctls map[string]string
	// IPv6 keeps IPv6 enabled (default: disabled in every lab namespace, so
	// there is no DAD/RS/MLD noise on the segment).
	IPv6 bool
}

// Lab is a running lab. Its methods are safe for concurrent use, except
// Start, which calls t.Fatal and so belongs on the test goroutine.
type Lab struct {
	t      testing.TB
	name   string
	subnet netip.Prefix
	sw     *Host
	nodes  []*Host
	client *Host
	// probePorts are the client's local ports for every Probe of the lab.
	probePorts probePorts

	mu     sync.Mutex
	procs  []*Proc
	socks  []io.Closer // listeners and packet conns opened in lab namespaces
	closed bool
	once   sync.Once
	err    error
}

// Host is one namespace of a lab: a node, the client or the switch.
type Host struct {
	name string // short: n1, c1, sw
	ns   string // full namespace name
	port string // switch-side veth name; "" for the switch
	addr netip.Addr
	mac  net.HardwareAddr
}

// Name is the host's short name: "n1".."nN", "c1" or "sw".
func (h *Host) Name() string { return h.name }

// NS is the host's namespace name, for `ip netns exec` / `ip -n`.
func (h *Host) NS() string { return h.ns }

// Addr is the host's address on the lab segment (invalid for the switch).
func (h *Host) Addr() netip.Addr { return h.addr }

// HostPort is "addr:port" for the host's lab address.
func (h *Host) HostPort(port uint16) string {
	return netip.AddrPortFrom(h.addr, port).String()
}

// MAC is the fixed MAC address of the host's eth0 (nil for the switch).
func (h *Host) MAC() net.HardwareAddr { return slices.Clone(h.mac) }

// Iface is the host's interface on the lab segment.
func (h *Host) Iface() string { return "eth0" }

// SwitchPort is the name of the host's port on the bridge, in the switch
// namespace ("" for the switch).
func (h *Host) SwitchPort() string { return h.port }

func (h *Host) String() string { return h.ns }

var prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// New builds a lab and registers its removal with t.Cleanup. On error,
// whatever was created is removed before New returns.
func New(t testing.TB, opts Options) (*Lab, error) {
	t.Helper()
	if opts.Prefix == "" {
		opts.Prefix = "fl"
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > MaxNodes {
		return nil, fmt.Errorf("netlab: Nodes must be 1..%d, got %d", MaxNodes, opts.Nodes)
	}
	if !prefixRE.MatchString(opts.Prefix) || len(opts.Prefix)+5 > 12 {
		return nil, fmt.Errorf("netlab: Prefix must match %s and be at most 7 characters, got %q", prefixRE, opts.Prefix)
	}
	subnet := opts.Subnet
	if !subnet.IsValid() {
		b := make([]byte, 1)
		rand.Read(b)
		subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, b[0], 0}), 24)
	}
	if !subnet.Addr().Is4() || subnet.Bits() != 24 || subnet.Masked() != subnet {
		return nil, fmt.Errorf("netlab: Subnet must be an IPv4 x.y.z.0/24, got %v", subnet)
	}
	name, err := freshName(opts.Prefix)
	if err != nil {
		return nil, err
	}

	if err := sweepStale(); err != nil {
		t.Logf("netlab: removing labs left by dead test processes: %v", err)
	}
	if err := writeMarker(name); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}

	l := &Lab{t: t, name: name, subnet: subnet}
	l.sw = &Host{name: "sw", ns: name + "-sw"}
	for i := 1; i <= opts.Nodes; i++ {
		l.nodes = append(l.nodes, l.newHost(fmt.Sprintf("n%d", i), byte(10+i)))
	}
	l.client = l.newHost("c1", 50)
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netlab: cleanup of lab %s: %v", l.name, err)
		}
	})
	if err := l.build(opts); err != nil {
		cerr := l.Close()
		return nil, errors.Join(fmt.Errorf("netlab: building lab %s: %w", name, err), cerr)
	}
	return l, nil
}

func (l *Lab) newHost(short string, last byte) *Host {
	a := l.subnet.Addr().As4()
	a[3] = last
	return &Host{
		name: short,
		ns:   l.name + "-" + short,
		port: short,
		addr: netip.AddrFrom4(a),
		mac:  net.HardwareAddr{0x02, 0x77, a[2], 0, 0, last},
	}
}

// freshName returns prefix + 5 random [a-z0-9] characters naming no
// existing namespace of that family.
func freshName(prefix string) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for range 10 {
		b := make([]byte, 5)
		rand.Read(b)
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		name := prefix + string(b)
		ms, _ := filepath.Glob(filepath.Join(netnsDir, name+"-*"))
		if len(ms) == 0 {
			return name, nil
		}
	}
	return "", errors.New("netlab: no free lab name after 10 tries")
}

func (l *Lab) hosts() []*Host { // nodes, client, switch last
	return append(append(slices.Clone(l.nodes), l.client), l.sw)
}

func (l *Lab) build(opts Options) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := map[string]string{
		"net.ipv4.conf.all.rp_filter":      "0",
		"net.ipv4.conf.default.rp_filter":  "0",
		"net.ipv4.conf.all.arp_accept":     "0",
		"net.ipv4.conf.default.arp_accept": "0",
		"net.ipv4.ip_forward":              "0",
	}
	optional := map[string]string{}
	if !opts.IPv6 {
		optional["net.ipv6.conf.all.disable_ipv6"] = "1"
		optional["net.ipv6.conf.default.disable_ipv6"] = "1"
	}
	// Namespaces and their sysctls first, so that interfaces are born with
	// IPv6 disabled.
	for _, h := range l.hosts() {
		if err := ipCmd(ctx, nil, "netns", "add", h.ns); err != nil {
			return err
		}
		sw := map[string]string{}
		if h == l.sw {
			for _, k := range []string{"iptables", "ip6tables", "arptables"} {
				sw["net.bridge.bridge-nf-call-"+k] = "0"
			}
		}
		extra := opts.Sysctls
		if h == l.sw {
			extra = nil
		}
		if err := l.setSysctls(h, base, optional, sw, extra); err != nil {
			return err
		}
	}
	var b strings.Builder
	b.WriteString("link set lo up\n")
	b.WriteString("link add br0 type bridge stp_state 0 forward_delay 0\n")
	b.WriteString("link set br0 up\n")
	for _, h := range l.hosts()[:len(l.hosts())-1] {
		fmt.Fprintf(&b, "link add %s type veth peer name eth0 address %s netns %s\n", h.port, h.mac, h.ns)
		fmt.Fprintf(&b, "link set %s master br0 up\n", h.port)
	}
	if err := ipCmd(ctx, strings.NewReader(b.String()), "-n", l.sw.ns, "-batch", "-"); err != nil {
		return err
	}
	for _, h := range l.hosts()[:len(l.hosts())-1] {
		script := fmt.Sprintf("link set lo up\naddr add %s/24 dev eth0\nlink set eth0 up\n", h.addr)
		if err := ipCmd(ctx, strings.NewReader(script), "-n", h.ns, "-batch", "-"); err != nil {
			return err
		}
	}
	// Bounded wait until every switch port and every eth0 is up with carrier.
	var last string
	for range 100 {
		out, err := exec.CommandContext(ctx, "ip", "-n", l.sw.ns, "-o", "link", "show", "type", "veth").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -n %s link show: %v: %s", l.sw.ns, err, out)
		}
		last = string(out)
		if n := countUp(last); n == len(l.nodes)+1 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("switch ports not all up after 2 s:\n%s", last)
}

// countUp counts `ip -o link` lines with LOWER_UP (carrier) and state UP.
func countUp(out string) int {
	n := 0
	for line := range strings.Lines(out) {
		if strings.Contains(line, ",LOWER_UP") && strings.Contains(line, " state UP ") {
			n++
		}
	}
	return n
}

// setSysctls writes sysctls inside h's namespace, in this order: required
// and extra keys must exist; optional and sw keys are skipped when the
// kernel does not have them (no IPv6, no br_netfilter).
func (l *Lab) setSysctls(h *Host, required, optional, sw, extra map[string]string) error {
	return inNS(h.ns, func() error {
		write := func(m map[string]string, mustExist bool) error {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
				if err := os.WriteFile(p, []byte(m[k]), 0o644); err != nil {
					if !mustExist && errors.Is(err, os.ErrNotExist) {
						continue
					}
					return fmt.Errorf("sysctl %s=%s in %s: %w", k, m[k], h.ns, err)
				}
			}
			return nil
		}
		return errors.Join(write(required, true), write(optional, false), write(sw, false), write(extra, true))
	})
}

// ipCmd runs ip with args (and stdin, if any) and returns an error that
// carries its output.
func ipCmd(ctx context.Context, stdin *strings.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Name is the lab's name: the prefix of all its namespaces.
func (l *Lab) Name() string { return l.name }

// Subnet is the lab's /24.
func (l *Lab) Subnet() netip.Prefix { return l.subnet }

// VIP is the address reserved for a virtual IP (.100); netlab does not
// configure it anywhere.
func (l *Lab) VIP() netip.Addr {
	a := l.subnet.Addr().As4()
	a[3] = 100
	return netip.AddrFrom4(a)
}

// Node returns node i, 1-based. It panics when i is out of range.
func (l *Lab) Node(i int) *Host {
	if i < 1 || i > len(l.nodes) {
		panic(fmt.Sprintf("netlab: Node(%d) of a %d-node lab", i, len(l.nodes)))
	}
	return l.nodes[i-1]
}

// Nodes returns all nodes, n1 first.
func (l *Lab) Nodes() []*Host { return slices.Clone(l.nodes) }

// Client returns the client host c1.
func (l *Lab) Client() *Host { return l.client }

// Switch returns the switch namespace (bridge br0; no address).
func (l *Lab) Switch() *Host { return l.sw }

// Exec runs `ip netns exec NS argv...` and returns its combined output. The
// error, if any, names the namespace and command. The command is killed
// when ctx ends.
func (l *Lab) Exec(ctx context.Context, h *Host, argv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("netlab: Exec without a command")
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns}, argv...)...)
	cmd.WaitDelay = time.Second // a background grandchild holding the pipe must not hang us
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netlab: in %s: %s: %w", h.ns, strings.Join(argv, " "), err)
	}
	return string(out), nil
}

// Cable plugs (up) or pulls (down) h's cable by setting its switch port up
// or down: h's eth0 then gains or loses carrier, and peers see silence.
func (l *Lab) Cable(h *Host, up bool) error {
	if h.port == "" {
		return errors.New("netlab: the switch has no cable")
	}
	state := "down"
	if up {
		state = "up"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ipCmd(ctx, nil, "-n", l.sw.ns, "link", "set", "dev", h.port, state)
}

// KillAll ends every process inside h's namespace: SIGTERM, then SIGKILL
// to those still there after a second. It returns once none is left, or
// an error after 5 s.
func (l *Lab) KillAll(h *Host) error {
	return killIn([]string{h.ns}, time.Second, 5*time.Second)
}

// Close ends every process in the lab and deletes its namespaces. It is
// idempotent; New registers it with t.Cleanup.
func (l *Lab) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		procs := slices.Clone(l.procs)
		socks := slices.Clone(l.socks)
		l.mu.Unlock()
		var errs []error
		for _, s := range socks {
			s.Close() // they would keep their namespace alive, nameless
		}
		nss := make([]string, 0, len(l.nodes)+2)
		for _, h := range l.hosts() {
			nss = append(nss, h.ns)
		}
		// Every process inside the lab, tracked or not: SIGTERM, then
		// SIGKILL. A tracked one that never got into its namespace is
		// killed just below.
		if err := killIn(nss, time.Second, 5*time.Second); err != nil {
			errs = append(errs, err)
		}
		for _, p := range procs {
			p.Kill()
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("process %v in %s did not exit", p.argv, p.host.ns))
			}
		}
		if l.t.Failed() {
			for _, p := range procs {
				l.t.Logf("netlab: %s: %s exited (%v); output:\n%s", p.host.ns, strings.Join(p.argv, " "), p.exitErr(), tail(p.Output(), 8192))
			}
		}
		// nodes and client first, the switch last (deleting a namespace
		// destroys its veth ends)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, ns := range nss {
			if _, err := os.Lstat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err := ipCmd(ctx, nil, "netns", "del", ns); err != nil {
				errs = append(errs, err)
			}
		}
		l.err = errors.Join(errs...)
		if l.err == nil {
			removeMarker(l.name)
		}
	})
	return l.err
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
