package proxy

import (
	"testing"
)

// TestBindFreebind: a frontend may bind an address this host does not
// hold (the VIP on a passive node). 192.0.2.0/24 is TEST-NET-1, never
// assigned here; no traffic is sent to it.
func TestBindFreebind(t *testing.T) {
	e, _ := startEngine(t, `
frontends: [{name: vip, bind: ["192.0.2.10:18080"], default_backend: b}]
backends: [{name: b, servers: [{name: s, address: "127.0.0.1:9"}]}]
`)
	addrs := e.Addrs()
	if a := addrs["192.0.2.10:18080"]; a == nil || a.String() != "192.0.2.10:18080" {
		t.Fatalf("listener on a foreign address: %v", addrs)
	}
}
