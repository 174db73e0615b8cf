package state

import (
	"fmt"
	"net/netip"
	"time"
)

// The VIP modes (VIP.Mode).
const (
	// VIPModeNone holds no virtual IP (the default, and the meaning of an
	// absent vip section).
	VIPModeNone = "none"
	// VIPModeActivePassive: the Raft leader holds each address on its
	// interface and announces it with gratuitous ARP.
	VIPModeActivePassive = "active-passive"
	// VIPModeActiveActive: every fit node holds each address as a /32 and
	// announces it to BGP peers; the router spreads flows with ECMP.
	VIPModeActiveActive = "active-active"
)

// The rules for an active-passive VIP while the cluster has no quorum
// (VIP.WithoutQuorum).
const (
	// WithoutQuorumRelease: nobody holds the VIP until a quorum is back,
	// or until an operator forces a claim.
	WithoutQuorumRelease = "release"
	// WithoutQuorumTiebreaker: the holder keeps the VIP, and a non-holder
	// claims it once gossip declared the holder dead, both only while the
	// tiebreaker address answers.
	WithoutQuorumTiebreaker = "tiebreaker"
	// WithoutQuorumAuto is release with three or more voters, tiebreaker
	// with two (see VIP.WithoutQuorumRule).
	WithoutQuorumAuto = "auto"
)

// VIP defaults and bounds.
const (
	DefaultGARPBurst       = 5
	MaxGARPBurst           = 50
	DefaultGARPInterval    = Duration(200 * time.Millisecond)
	DefaultGARPRefresh     = Duration(10 * time.Second)
	DefaultPreemptDelay    = Duration(30 * time.Second)
	DefaultHandOverTimeout = Duration(2 * time.Second)
	MaxHandOverTimeout     = Duration(5 * time.Minute)
	DefaultBGPHoldTime     = Duration(3 * time.Second)
	DefaultBGPKeepalive    = Duration(time.Second)
	DefaultBGPConnectRetry = Duration(time.Second)

	minGARPInterval = Duration(10 * time.Millisecond)
	maxGARPInterval = Duration(10 * time.Second)
	minGARPRefresh  = Duration(time.Second)
	// minBGPHoldTime and maxBGPHoldTime are RFC 4271's bounds for a
	// non-zero hold time (it travels in the OPEN as 16-bit seconds).
	minBGPHoldTime = Duration(3 * time.Second)
	maxBGPHoldTime = Duration(65535 * time.Second)
)

// VIP is the config document's `vip:` section: the cluster-wide settings of
// the virtual IPs. A nil *VIP (no section) means mode none. The per-node
// settings (interface, priority, BGP identity) live in the node config.
type VIP struct {
	// Mode is active-passive, active-active or none (default none).
	Mode string `yaml:"mode" json:"mode"`
	// Addresses are the virtual IPs, IPv4 with their prefix length:
	// active-passive in the nodes' subnet ("10.0.0.100/24"), active-active
	// host routes ("192.0.2.10/32"). Prefixes parses them.
	Addresses []string `yaml:"addresses" json:"addresses"`
	// GARP is the gratuitous ARP schedule of an active-passive VIP.
	GARP GARP `yaml:"garp" json:"garp"`
	// Tiebreaker is an address that must answer (ARP/ICMP) before a node
	// may hold the VIP without quorum; optional unless without_quorum is
	// tiebreaker.
	Tiebreaker string `yaml:"tiebreaker" json:"tiebreaker,omitempty"`
	// WithoutQuorum is release, tiebreaker or auto (default auto).
	WithoutQuorum string `yaml:"without_quorum" json:"without_quorum"`
	// PreemptDelay is how long a returning preferred node must be healthy
	// before it takes the VIP back; 0: never preempt. Default 30s (nil
	// until ApplyDefaults; use PreemptAfter).
	PreemptDelay *Duration `yaml:"preempt_delay" json:"preempt_delay,omitempty"`
	// HandOverTimeout bounds how long a planned hand-over (drain, stop,
	// upgrade, failover, failback) lets the connections the node has
	// finish before the address moves; new connections for the VIP wait
	// meanwhile (their SYNs are dropped, and retransmitted after 1 s, then
	// 3 s). 0: move at once. Default 2s (nil until ApplyDefaults; use
	// HandOverWait). Schema level 3.
	HandOverTimeout *Duration `yaml:"handover_timeout" json:"handover_timeout,omitempty"`
	// BGP is the speaker's settings for active-active.
	BGP BGP `yaml:"bgp" json:"bgp"`
}

// GARP is the gratuitous ARP schedule: Burst announcements Interval apart
// on takeover, then one every Refresh (0: no refresh).
type GARP struct {
	Burst    int      `yaml:"burst" json:"burst"`
	Interval Duration `yaml:"interval" json:"interval"`
	// Refresh defaults to 10s; 0 turns the refresh off (nil until
	// ApplyDefaults; use RefreshEvery).
	Refresh *Duration `yaml:"refresh" json:"refresh,omitempty"`
}

// BGP holds the embedded speaker's peers and timers (active-active).
type BGP struct {
	Peers []BGPPeer `yaml:"peers" json:"peers,omitempty"`
	// HoldTime is the proposed hold time, whole seconds, at least 3s.
	HoldTime Duration `yaml:"hold_time" json:"hold_time"`
	// Keepalive is the keepalive interval, whole seconds, below HoldTime.
	Keepalive Duration `yaml:"keepalive" json:"keepalive"`
	// ConnectRetry is the wait between connection attempts, whole seconds.
	ConnectRetry Duration `yaml:"connect_retry" json:"connect_retry"`
}

// BGPPeer is a router to announce the VIPs to.
type BGPPeer struct {
	Address string `yaml:"address" json:"address"`
	ASN     uint32 `yaml:"asn" json:"asn"`
}

// EffectiveVIP returns the document's vip section with defaults applied:
// mode none when the section is absent. It does not change c.
func (c *Config) EffectiveVIP() VIP {
	var v VIP
	if c.VIP != nil {
		v = *c.VIP
	}
	v.ApplyDefaults()
	return v
}

// ApplyDefaults fills every unset field. It is idempotent; on a nil *VIP
// (no section: mode none) it does nothing.
func (v *VIP) ApplyDefaults() {
	if v == nil {
		return
	}
	if v.Mode == "" {
		v.Mode = VIPModeNone
	}
	if v.WithoutQuorum == "" {
		v.WithoutQuorum = WithoutQuorumAuto
	}
	if v.PreemptDelay == nil {
		v.PreemptDelay = ptr(DefaultPreemptDelay)
	}
	if v.HandOverTimeout == nil {
		v.HandOverTimeout = ptr(DefaultHandOverTimeout)
	}
	setInt(&v.GARP.Burst, DefaultGARPBurst)
	setDur(&v.GARP.Interval, DefaultGARPInterval)
	if v.GARP.Refresh == nil {
		v.GARP.Refresh = ptr(DefaultGARPRefresh)
	}
	setDur(&v.BGP.HoldTime, DefaultBGPHoldTime)
	setDur(&v.BGP.Keepalive, DefaultBGPKeepalive)
	setDur(&v.BGP.ConnectRetry, DefaultBGPConnectRetry)
}

// PreemptAfter is the preempt delay (0: never preempt).
func (v *VIP) PreemptAfter() time.Duration {
	if v.PreemptDelay == nil {
		return DefaultPreemptDelay.D()
	}
	return v.PreemptDelay.D()
}

// HandOverWait is the hand-over timeout (see VIP.HandOverTimeout).
func (v *VIP) HandOverWait() time.Duration {
	if v.HandOverTimeout == nil {
		return DefaultHandOverTimeout.D()
	}
	return v.HandOverTimeout.D()
}

// RefreshEvery is the GARP refresh period (0: no refresh).
func (g GARP) RefreshEvery() time.Duration {
	if g.Refresh == nil {
		return DefaultGARPRefresh.D()
	}
	return g.Refresh.D()
}

// Prefixes returns the addresses, parsed. It skips any that do not parse,
// which Validate refuses.
func (v *VIP) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(v.Addresses))
	for _, a := range v.Addresses {
		if p, err := netip.ParsePrefix(a); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TiebreakerAddr returns the tiebreaker address, and false when none is
// set (or it does not parse, which Validate refuses).
func (v *VIP) TiebreakerAddr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(v.Tiebreaker)
	return a, err == nil
}

// WithoutQuorumRule resolves without_quorum for a cluster of voters voters:
// auto is release with three or more voters and tiebreaker with two (release
// when no tiebreaker address is set, since the tiebreaker rule holds the
// VIP only while that address answers). The result is release or
// tiebreaker.
func (v *VIP) WithoutQuorumRule(voters int) string {
	switch v.WithoutQuorum {
	case WithoutQuorumRelease, WithoutQuorumTiebreaker:
		return v.WithoutQuorum
	}
	if voters == 2 && v.Tiebreaker != "" {
		return WithoutQuorumTiebreaker
	}
	return WithoutQuorumRelease
}

// validate adds the section's faults to es, under path p ("vip"). A nil
// *VIP (no section) has none.
func (v *VIP) validate(es *Errors, p string) {
	if v == nil {
		return
	}
	switch v.Mode {
	case VIPModeNone, VIPModeActivePassive, VIPModeActiveActive:
	default:
		es.add(p+".mode", "unknown mode %q (want active-passive, active-active or none)", v.Mode)
	}
	if (v.Mode == VIPModeActivePassive || v.Mode == VIPModeActiveActive) && len(v.Addresses) == 0 {
		es.add(p+".addresses", "at least one address is required in mode %s", v.Mode)
	}
	seen := map[netip.Addr]int{}
	for i, a := range v.Addresses {
		ap := fmt.Sprintf("%s.addresses[%d]", p, i)
		pfx, msg := checkVIPPrefix(a, v.Mode)
		if msg != "" {
			es.add(ap, "%s", msg)
			continue
		}
		if j, dup := seen[pfx.Addr()]; dup {
			es.add(ap, "duplicate address %s (also addresses[%d])", pfx.Addr(), j)
		}
		seen[pfx.Addr()] = i
	}

	g := v.GARP
	if g.Burst < 1 || g.Burst > MaxGARPBurst {
		es.add(p+".garp.burst", "must be between 1 and %d, got %d", MaxGARPBurst, g.Burst)
	}
	if g.Interval < minGARPInterval || g.Interval > maxGARPInterval {
		es.add(p+".garp.interval", "must be between %s and %s, got %s", minGARPInterval, maxGARPInterval, g.Interval)
	}
	if r := g.Refresh; r != nil && *r != 0 && *r < minGARPRefresh {
		es.add(p+".garp.refresh", "must be 0 (off) or at least %s, got %s", minGARPRefresh, *r)
	}

	if v.Tiebreaker != "" {
		switch a, err := netip.ParseAddr(v.Tiebreaker); {
		case err != nil:
			es.add(p+".tiebreaker", "%q is not an IP address", v.Tiebreaker)
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			es.add(p+".tiebreaker", "%s cannot answer from another host", a)
		default:
			if j, isVIP := seen[a.Unmap()]; isVIP {
				es.add(p+".tiebreaker", "%s is addresses[%d]: the tiebreaker must answer from elsewhere", a, j)
			}
		}
	}
	switch v.WithoutQuorum {
	case WithoutQuorumRelease, WithoutQuorumAuto:
	case WithoutQuorumTiebreaker:
		if v.Tiebreaker == "" {
			es.add(p+".tiebreaker", "missing (without_quorum is tiebreaker)")
		}
	default:
		es.add(p+".without_quorum", "unknown rule %q (want release, tiebreaker or auto)", v.WithoutQuorum)
	}
	// PreemptDelay needs no check: the parser refuses negative durations.
	if h := v.HandOverTimeout; h != nil && *h > MaxHandOverTimeout {
		es.add(p+".handover_timeout", "must be at most %s, got %s", MaxHandOverTimeout, *h)
	}

	v.BGP.validate(es, p+".bgp", v.Mode == VIPModeActiveActive)
}

// checkVIPPrefix parses a VIP address and returns why it is unusable in
// mode, or "".
func checkVIPPrefix(s, mode string) (netip.Prefix, string) {
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return pfx, fmt.Sprintf("invalid address %q (want an IPv4 address with its prefix length, e.g. 10.0.0.100/24)", s)
	}
	a := pfx.Addr()
	switch {
	case !a.Is4():
		return pfx, fmt.Sprintf("%s is not an IPv4 address (the VIP is announced with ARP or IPv4 BGP)", a)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return pfx, fmt.Sprintf("%s cannot be a virtual IP", a)
	}
	bits := pfx.Bits()
	if mode == VIPModeActiveActive && bits != 32 {
		return pfx, fmt.Sprintf("active-active announces host routes: want %s/32, got /%d", a, bits)
	}
	if bits < 31 {
		if a == pfx.Masked().Addr() {
			return pfx, fmt.Sprintf("%s is the network address of %s", a, pfx.Masked())
		}
		if a == lastAddr(pfx) {
			return pfx, fmt.Sprintf("%s is the broadcast address of %s", a, pfx.Masked())
		}
	}
	return pfx, ""
}

// lastAddr is the highest address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

// validate adds the BGP section's faults; needPeers: the mode is
// active-active.
func (b BGP) validate(es *Errors, p string, needPeers bool) {
	if needPeers && len(b.Peers) == 0 {
		es.add(p+".peers", "active-active needs at least one BGP peer")
	}
	seen := map[netip.Addr]int{}
	for i, peer := range b.Peers {
		pp := fmt.Sprintf("%s.peers[%d]", p, i)
		switch a, err := netip.ParseAddr(peer.Address); {
		case peer.Address == "":
			es.add(pp+".address", "missing")
		case err != nil:
			es.add(pp+".address", "%q is not an IP address", peer.Address)
		case a.IsUnspecified() || a.IsMulticast():
			es.add(pp+".address", "%s cannot be a BGP peer", a)
		default:
			if j, dup := seen[a]; dup {
				es.add(pp+".address", "duplicate peer %s (also peers[%d])", a, j)
			}
			seen[a] = i
		}
		if peer.ASN == 0 {
			es.add(pp+".asn", "missing")
		}
	}
	wholeSeconds := func(key string, d Duration) bool {
		if d%Duration(time.Second) != 0 {
			es.add(p+"."+key, "must be whole seconds, got %s", d)
			return false
		}
		return true
	}
	if wholeSeconds("hold_time", b.HoldTime) && (b.HoldTime < minBGPHoldTime || b.HoldTime > maxBGPHoldTime) {
		es.add(p+".hold_time", "must be between %s and %s (RFC 4271), got %s", minBGPHoldTime, maxBGPHoldTime, b.HoldTime)
	}
	if wholeSeconds("keepalive", b.Keepalive) {
		switch {
		case b.Keepalive < Duration(time.Second):
			es.add(p+".keepalive", "must be at least 1s, got %s", b.Keepalive)
		case b.Keepalive >= b.HoldTime:
			es.add(p+".keepalive", "must be below hold_time (%s), got %s", b.HoldTime, b.Keepalive)
		}
	}
	if wholeSeconds("connect_retry", b.ConnectRetry) && b.ConnectRetry < Duration(time.Second) {
		es.add(p+".connect_retry", "must be at least 1s, got %s", b.ConnectRetry)
	}
}
