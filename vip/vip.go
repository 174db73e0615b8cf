// Package vip makes this node answer for virtual IPs, or stop: an ARP
// announcer (the address on an interface plus gratuitous ARP) for
// active-passive, and a BGP announcer (a /32 on a dummy interface plus an
// embedded BGP speaker) for active-active. It is told what to hold and
// knows nothing of Raft: the cluster package decides ownership.
package vip

import (
	"context"
	"net/netip"
)

// Announcer holds and announces VIPs on this node.
type Announcer interface {
	// Claim makes this node hold addr and announce it (a GARP burst, or a
	// BGP route). Claiming an address already held re-announces it.
	Claim(ctx context.Context, addr netip.Prefix) error
	// Release stops announcing addr (BGP: withdraw first) and removes it.
	Release(ctx context.Context, addr netip.Prefix) error
	// Held lists the VIPs this node holds now, read from the system (the
	// interface's addresses), not from memory.
	Held() ([]netip.Prefix, error)
	// Close stops announcing (withdraws routes) and releases resources; it
	// does not remove addresses (the reconcile loop does).
	Close() error
}

// Withdrawer is an Announcer that can stop announcing an address while
// keeping it (BGP): a draining node withdraws first, lets the connections
// it already has finish, then releases.
type Withdrawer interface {
	Withdraw(ctx context.Context, addr netip.Prefix) error
}
