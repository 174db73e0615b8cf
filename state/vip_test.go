package state

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestVIPAbsentIsModeNone(t *testing.T) {
	c, err := Parse([]byte("frontends: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.VIP != nil {
		t.Errorf("absent section became %+v", c.VIP)
	}
	v := c.EffectiveVIP()
	if v.Mode != VIPModeNone || v.WithoutQuorum != WithoutQuorumAuto || v.PreemptAfter() != 30*time.Second {
		t.Errorf("effective section %+v", v)
	}
	if c.VIP != nil {
		t.Error("EffectiveVIP changed the config")
	}
}

func TestVIPDefaults(t *testing.T) {
	c, err := Parse([]byte("vip: {mode: active-passive, addresses: [10.0.0.100/24]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	v := c.VIP
	if v.Mode != VIPModeActivePassive || v.WithoutQuorum != WithoutQuorumAuto || v.Tiebreaker != "" {
		t.Errorf("mode %q without_quorum %q tiebreaker %q", v.Mode, v.WithoutQuorum, v.Tiebreaker)
	}
	if v.GARP.Burst != 5 || v.GARP.Interval.D() != 200*time.Millisecond || v.GARP.RefreshEvery() != 10*time.Second {
		t.Errorf("garp %+v refresh %v", v.GARP, v.GARP.RefreshEvery())
	}
	if v.PreemptAfter() != 30*time.Second {
		t.Errorf("preempt_delay %v", v.PreemptAfter())
	}
	if v.HandOverWait() != 2*time.Second {
		t.Errorf("handover_timeout %v", v.HandOverWait())
	}
	if b := v.BGP; b.HoldTime.D() != 3*time.Second || b.Keepalive.D() != time.Second || b.ConnectRetry.D() != time.Second {
		t.Errorf("bgp timers %+v", b)
	}
	if got := v.Prefixes(); len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.100/24") {
		t.Errorf("Prefixes() = %v", got)
	}

	// An empty section is mode none.
	c, err = Parse([]byte("vip: {}\n"))
	if err != nil || c.VIP.Mode != VIPModeNone {
		t.Errorf("vip: {} gave %+v, %v", c.VIP, err)
	}
}

// Zero means off for refresh and never for preempt_delay: an explicit 0 is
// not replaced by the default, and survives ApplyDefaults again.
func TestVIPExplicitZeros(t *testing.T) {
	c, err := Parse([]byte("vip: {mode: active-passive, addresses: [10.0.0.100/24], garp: {refresh: 0}, preempt_delay: 0, handover_timeout: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if c.VIP.GARP.RefreshEvery() != 0 || c.VIP.PreemptAfter() != 0 || c.VIP.HandOverWait() != 0 {
		t.Errorf("refresh %v preempt %v handover %v, want 0 0 0", c.VIP.GARP.RefreshEvery(), c.VIP.PreemptAfter(), c.VIP.HandOverWait())
	}
}

func TestVIPFullSections(t *testing.T) {
	for name, doc := range map[string]string{
		"active-passive": `
vip:
  mode: active-passive
  addresses: ["10.0.0.100/24", "10.0.0.101/24"]
  garp: {burst: 3, interval: 100ms, refresh: 30s}
  tiebreaker: 10.0.0.1
  without_quorum: tiebreaker
  preempt_delay: 1m
`,
		"active-active": `
vip:
  mode: active-active
  addresses: ["192.0.2.10/32"]
  bgp:
    peers: [{address: 10.0.0.1, asn: 65000}, {address: "fd00::1", asn: 4200000000}]
    hold_time: 9s
    keepalive: 3s
    connect_retry: 2s
`,
		"none with leftovers": `
vip: {mode: none, addresses: ["10.0.0.100/24"]}
`,
	} {
		if _, err := Parse([]byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestVIPValidationByPath(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"mode", "vip: {mode: vrrp}", []string{`vip.mode: unknown mode "vrrp"`}},
		{"no addresses", "vip: {mode: active-passive}", []string{"vip.addresses: at least one address is required in mode active-passive"}},
		{"addresses", `vip: {mode: active-passive, addresses: ["10.0.0.100", "fd00::10/64", "127.0.0.5/8", "10.0.0.0/24", "10.0.0.255/24", "10.0.0.7/24", "10.0.0.7/16", "0.0.0.0/0", "224.0.0.5/24"]}`, []string{
			`vip.addresses[0]: invalid address "10.0.0.100" (want an IPv4 address with its prefix length`,
			"vip.addresses[1]: fd00::10 is not an IPv4 address",
			"vip.addresses[2]: 127.0.0.5 cannot be a virtual IP",
			"vip.addresses[3]: 10.0.0.0 is the network address of 10.0.0.0/24",
			"vip.addresses[4]: 10.0.0.255 is the broadcast address of 10.0.0.0/24",
			"vip.addresses[6]: duplicate address 10.0.0.7 (also addresses[5])",
			"vip.addresses[7]: 0.0.0.0 cannot be a virtual IP",
			"vip.addresses[8]: 224.0.0.5 cannot be a virtual IP",
		}},
		{"active-active", `vip: {mode: active-active, addresses: ["192.0.2.10/24", "192.0.2.11/32"]}`, []string{
			"vip.addresses[0]: active-active announces host routes: want 192.0.2.10/32, got /24",
			"vip.bgp.peers: active-active needs at least one BGP peer",
		}},
		{"handover_timeout", `vip: {mode: active-passive, addresses: ["10.0.0.100/24"], handover_timeout: 6m}`, []string{
			"vip.handover_timeout: must be at most 5m0s, got 6m0s",
		}},
		{"garp", `vip: {mode: active-passive, addresses: ["10.0.0.100/24"], garp: {burst: 51, interval: 1ms, refresh: 500ms}}`, []string{
			"vip.garp.burst: must be between 1 and 50, got 51",
			"vip.garp.interval: must be between 10ms and 10s, got 1ms",
			"vip.garp.refresh: must be 0 (off) or at least 1s, got 500ms",
		}},
		{"tiebreaker missing", `vip: {mode: active-passive, addresses: ["10.0.0.100/24"], without_quorum: tiebreaker}`, []string{
			"vip.tiebreaker: missing (without_quorum is tiebreaker)",
		}},
		{"tiebreaker is the vip", `vip: {mode: active-passive, addresses: ["10.0.0.100/24"], tiebreaker: 10.0.0.100}`, []string{
			"vip.tiebreaker: 10.0.0.100 is addresses[0]: the tiebreaker must answer from elsewhere",
		}},
		{"tiebreaker bad", `vip: {mode: active-passive, addresses: ["10.0.0.100/24"], tiebreaker: gateway, without_quorum: sometimes}`, []string{
			`vip.tiebreaker: "gateway" is not an IP address`,
			`vip.without_quorum: unknown rule "sometimes" (want release, tiebreaker or auto)`,
		}},
		{"bgp", `
vip:
  mode: active-active
  addresses: ["192.0.2.10/32"]
  bgp:
    peers: [{address: router}, {address: 10.0.0.1, asn: 1}, {address: 10.0.0.1, asn: 2}, {asn: 3}]
    hold_time: 2s
    keepalive: 1500ms
    connect_retry: 0.5s
`, []string{
			`vip.bgp.peers[0].address: "router" is not an IP address`,
			"vip.bgp.peers[0].asn: missing",
			"vip.bgp.peers[2].address: duplicate peer 10.0.0.1 (also peers[1])",
			"vip.bgp.peers[3].address: missing",
			"vip.bgp.hold_time: must be between 3s and 18h12m15s (RFC 4271), got 2s",
			"vip.bgp.keepalive: must be whole seconds, got 1.5s",
			"vip.bgp.connect_retry: must be whole seconds, got 500ms",
		}},
		{"keepalive not below hold", `vip: {mode: active-active, addresses: ["192.0.2.10/32"], bgp: {peers: [{address: 10.0.0.1, asn: 65000}], hold_time: 3s, keepalive: 3s}}`, []string{
			"vip.bgp.keepalive: must be below hold_time (3s), got 3s",
		}},
	} {
		_, err := Parse([]byte(tc.doc))
		es, ok := errors.AsType[Errors](err)
		if !ok {
			t.Errorf("%s: want Errors, got %v", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: missing fault %q in:\n%s", tc.name, w, err)
			}
		}
		if len(es) != len(tc.want) {
			t.Errorf("%s: got %d faults, want %d:\n%s", tc.name, len(es), len(tc.want), err)
		}
	}
}

func TestVIPUnknownKey(t *testing.T) {
	_, err := Parse([]byte("vip: {mode: none, adresses: []}\n"))
	if err == nil || !strings.Contains(err.Error(), "adresses") {
		t.Errorf("got %v", err)
	}
}

func TestVIPWithoutQuorumRule(t *testing.T) {
	for _, tc := range []struct {
		rule, tiebreaker string
		voters           int
		want             string
	}{
		{WithoutQuorumAuto, "10.0.0.1", 2, WithoutQuorumTiebreaker},
		{WithoutQuorumAuto, "10.0.0.1", 3, WithoutQuorumRelease},
		{WithoutQuorumAuto, "10.0.0.1", 5, WithoutQuorumRelease},
		{WithoutQuorumAuto, "", 2, WithoutQuorumRelease},
		{WithoutQuorumRelease, "10.0.0.1", 2, WithoutQuorumRelease},
		{WithoutQuorumTiebreaker, "10.0.0.1", 3, WithoutQuorumTiebreaker},
	} {
		v := VIP{WithoutQuorum: tc.rule, Tiebreaker: tc.tiebreaker}
		if got := v.WithoutQuorumRule(tc.voters); got != tc.want {
			t.Errorf("%s with %d voters, tiebreaker %q: %s, want %s", tc.rule, tc.voters, tc.tiebreaker, got, tc.want)
		}
	}
}

func TestVIPLastAddr(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.7/24": "10.0.0.255", "10.1.2.3/8": "10.255.255.255", "10.0.0.5/30": "10.0.0.7", "10.0.0.5/32": "10.0.0.5"} {
		if got := lastAddr(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

// A parsed section survives YAML and JSON round trips, explicit zeros
// included (the replicated document and the snapshot carry it).
func TestVIPRoundTrip(t *testing.T) {
	c, err := Parse([]byte(`
vip:
  mode: active-active
  addresses: ["192.0.2.10/32"]
  garp: {refresh: 0}
  preempt_delay: 0
  tiebreaker: 10.0.0.1
  bgp: {peers: [{address: 10.0.0.1, asn: 65000}], hold_time: 9s, keepalive: 3s}
`))
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if !reflect.DeepEqual(back.VIP, c.VIP) {
		t.Errorf("YAML round trip:\n got %+v\nwant %+v\n%s", back.VIP, c.VIP, y)
	}
	j, err := json.Marshal(c.VIP)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON VIP
	if err := json.Unmarshal(j, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&fromJSON, c.VIP) {
		t.Errorf("JSON round trip:\n got %+v\nwant %+v\n%s", fromJSON, *c.VIP, j)
	}
}
