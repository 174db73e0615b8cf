package vip

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The frames, written out by hand from RFC 826 and the kernel's notion of
// a gratuitous ARP (arp_process: sip == tip for a request; also tha == sha
// for a reply).
func TestGARPFramesBytes(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x77, 0x0a, 0x00, 0x00, 0x0b}
	vip := netip.MustParseAddr("10.77.10.100")
	req, rep, err := GARPFrames(mac, vip)
	if err != nil {
		t.Fatal(err)
	}
	const pad = "000000000000000000000000000000000000" // 18 bytes: 28-byte ARP payload -> 46
	wantReq := unhex(t, `
		ffffffffffff 02770a00000b 0806
		0001 0800 06 04 0001
		02770a00000b 0a4d0a64
		000000000000 0a4d0a64`+pad)
	wantRep := unhex(t, `
		ffffffffffff 02770a00000b 0806
		0001 0800 06 04 0002
		02770a00000b 0a4d0a64
		02770a00000b 0a4d0a64`+pad)
	if len(req) != 60 || len(rep) != 60 {
		t.Fatalf("frame lengths %d, %d; want 60 (minimum Ethernet frame without FCS)", len(req), len(rep))
	}
	if !bytes.Equal(req, wantReq) {
		t.Errorf("request frame\n got %x\nwant %x", req, wantReq)
	}
	if !bytes.Equal(rep, wantRep) {
		t.Errorf("reply frame\n got %x\nwant %x", rep, wantRep)
	}
}

func TestGARPFramesRejects(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	if _, _, err := GARPFrames(mac, netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("IPv6 VIP accepted")
	}
	if _, _, err := GARPFrames(net.HardwareAddr{1, 2, 3}, netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Error("3-byte MAC accepted")
	}
	if _, _, err := GARPFrames(mac, netip.Addr{}); err == nil {
		t.Error("zero VIP accepted")
	}
}

func TestARPOptionsValidate(t *testing.T) {
	if err := DefaultARPOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	d := DefaultARPOptions()
	if d.Burst != 5 || d.Interval != 200*time.Millisecond || d.Refresh != 10*time.Second {
		t.Errorf("defaults = %+v", d)
	}
	ok := []ARPOptions{
		{Burst: 1}, // one GARP, no interval needed, no refresh
		{Burst: 3, Interval: time.Millisecond, Refresh: 0},
	}
	for _, o := range ok {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	bad := []ARPOptions{
		{Burst: 0},
		{Burst: 2},
		{Burst: 1, Refresh: -time.Second},
		{Burst: 1, Managed: []netip.Prefix{netip.MustParsePrefix("2001:db8::1/128")}},
		{Burst: 1, Managed: []netip.Prefix{{}}},
	}
	for _, o := range bad {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: accepted", o)
		}
	}
	if _, err := NewARPAnnouncer("eth0", ARPOptions{}); err == nil {
		t.Error("NewARPAnnouncer accepted invalid options")
	}
}
