package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// dummySysctls are set on the dummy interface and on "all" by EnsureDummy:
// the kernel uses the larger of the two values, and with these the node
// answers ARP only for addresses of the interface the request came in on
// (arp_ignore=1) and picks a source address of the outgoing interface for
// its own requests (arp_announce=2), so it never answers ARP for, nor
// leaks, the /32 VIPs on the dummy.
var dummySysctls = []struct{ key, value string }{
	{"arp_ignore", "1"},
	{"arp_announce", "2"},
}

// ErrNoDummyDriver is returned by EnsureDummy when the kernel cannot
// create dummy interfaces (no CONFIG_DUMMY). The loopback interface "lo"
// can hold the /32s instead.
var ErrNoDummyDriver = errors.New("vip: the kernel has no dummy interface driver (CONFIG_DUMMY); use \"lo\" for the VIPs")

// EnsureDummy makes sure the dummy interface name exists and is up, in the
// calling thread's network namespace, and sets arp_ignore=1 and
// arp_announce=2 on it and on "all". It is idempotent. An existing
// interface of another type is an error, except the loopback interface,
// which is used as it is (for kernels without the dummy driver).
func EnsureDummy(name string) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("vip: netlink: %w", err)
	}
	defer h.Close()
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return fmt.Errorf("vip: netlink: %w", err)
	}
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}})
		switch {
		case errors.Is(err, unix.EOPNOTSUPP):
			return fmt.Errorf("%w: creating %s: %w", ErrNoDummyDriver, name, err)
		case err != nil && !errors.Is(err, unix.EEXIST):
			return fmt.Errorf("vip: creating dummy interface %s: %w", name, err)
		}
		if link, err = h.LinkByName(name); err != nil {
			return fmt.Errorf("vip: dummy interface %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("vip: interface %s: %w", name, err)
	}
	if link.Type() != "dummy" && link.Attrs().Flags&net.FlagLoopback == 0 {
		return fmt.Errorf("vip: interface %s exists and is a %s, not a dummy", name, link.Type())
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("vip: setting %s up: %w", name, err)
	}
	for _, dev := range []string{name, "all"} {
		for _, s := range dummySysctls {
			p := filepath.Join("/proc/sys/net/ipv4/conf", dev, s.key)
			if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
				return fmt.Errorf("vip: sysctl net.ipv4.conf.%s.%s=%s: %w", dev, s.key, s.value, err)
			}
		}
	}
	return nil
}

// DummyAnnouncer holds active-active VIPs as /32 addresses on a dummy
// interface (see EnsureDummy). It announces nothing itself: the BGP side
// wraps it and advertises a route for each VIP. Held reports every IPv4
// /32 on the interface outside 127.0.0.0/8: the interface is dedicated to
// VIPs, or is the loopback interface, whose own addresses are never
// reported (and so never removed by the reconcile loop).
//
// Like ARPAnnouncer it works in the network namespace current when it was
// created.
type DummyAnnouncer struct {
	name string
	log  *slog.Logger
	nl   *netlink.Handle

	// life is held shared by the methods using the netlink socket and
	// exclusively by Close, so that the socket is not closed while in use.
	life   sync.RWMutex
	closed bool
}

var _ Announcer = (*DummyAnnouncer)(nil)

// NewDummyAnnouncer returns an announcer for the dummy interface name
// (or "lo"), which EnsureDummy should have prepared. log may be nil.
func NewDummyAnnouncer(name string, log *slog.Logger) (*DummyAnnouncer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	return &DummyAnnouncer{name: name, log: log.With("iface", name), nl: h}, nil
}

func checkHost(addr netip.Prefix) error {
	if !addr.IsValid() || !addr.Addr().Is4() || addr.Bits() != 32 || addr.Addr().IsLoopback() {
		return fmt.Errorf("vip: %v: active-active VIPs are IPv4 /32s outside 127.0.0.0/8", addr)
	}
	return nil
}

// Claim adds addr, which must be an IPv4 /32, to the dummy interface;
// an address already there is not an error.
func (d *DummyAnnouncer) Claim(ctx context.Context, addr netip.Prefix) error {
	if err := checkHost(addr); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return ErrClosed
	}
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("vip: claim %v: interface %s: %w", addr, d.name, err)
	}
	if err := d.nl.AddrReplace(link, nlAddr(addr)); err != nil {
		return fmt.Errorf("vip: claim %v: adding it to %s: %w", addr, d.name, err)
	}
	d.log.Debug("vip added", "vip", addr)
	return nil
}

// Release removes addr from the dummy interface; an address already gone
// is not an error.
func (d *DummyAnnouncer) Release(ctx context.Context, addr netip.Prefix) error {
	if err := checkHost(addr); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return ErrClosed
	}
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("vip: release %v: interface %s: %w", addr, d.name, err)
	}
	if err := d.nl.AddrDel(link, nlAddr(addr)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("vip: release %v: removing it from %s: %w", addr, d.name, err)
	}
	d.log.Debug("vip removed", "vip", addr)
	return nil
}

// Held lists the IPv4 /32s outside 127.0.0.0/8 on the interface now,
// sorted.
func (d *DummyAnnouncer) Held() ([]netip.Prefix, error) {
	d.life.RLock()
	defer d.life.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	all, err := listAddrs(d.nl, d.name)
	if err != nil {
		return nil, err
	}
	var held []netip.Prefix
	for _, p := range all {
		if p.Bits() == 32 && !p.Addr().IsLoopback() {
			held = append(held, p)
		}
	}
	return held, nil
}

// Close closes the netlink socket; it leaves the addresses (and the
// interface) in place. It is idempotent.
func (d *DummyAnnouncer) Close() error {
	d.life.Lock()
	defer d.life.Unlock()
	if !d.closed {
		d.closed = true
		d.nl.Close()
	}
	return nil
}
