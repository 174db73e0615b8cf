package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ErrLeaseLost is returned by ARPAnnouncer.Claim when ARPOptions.LeaseOK
// says this node may not hold VIPs now.
var ErrLeaseLost = errors.New("vip: leadership lease does not hold; not claiming")

// ErrClosed is returned by an announcer's methods after Close.
var ErrClosed = errors.New("vip: announcer closed")

// netlinkTimeout bounds every netlink request an announcer makes.
const netlinkTimeout = 5 * time.Second

// ARPOptions configures an ARPAnnouncer. The config layer applies the
// defaults (DefaultARPOptions); NewARPAnnouncer only validates.
type ARPOptions struct {
	// Burst is the number of gratuitous ARPs sent on every Claim, each in
	// both forms (request and reply); at least 1.
	Burst int
	// Interval is the spacing of the burst's GARPs; positive when Burst > 1.
	Interval time.Duration
	// Refresh is the period of the GARPs re-sent after the burst for every
	// claimed VIP, until it is released; 0 turns the refresh off.
	Refresh time.Duration
	// Managed are the configured VIPs: Held reports the interface's
	// addresses whose IP is one of these (whatever their prefix length), or
	// one that this announcer has claimed since it was created. Addresses
	// left on the interface by a previous run are so found and removed by
	// the reconcile loop.
	Managed []netip.Prefix
	// Log receives claims, releases and send failures; nil discards them.
	Log *slog.Logger
	// LeaseOK, if set, is asked before every GARP and every Claim; when it
	// returns false the GARP is skipped and Claim fails with ErrLeaseLost
	// (a leader that was paused and lost its lease must not announce). It
	// is called with the announcer's send lock held: it must be quick and
	// must not call back into the announcer.
	LeaseOK func() bool
}

// DefaultARPOptions returns the defaults of the `vip.garp` config: a burst
// of 5 GARPs 200 ms apart, then one every 10 s.
func DefaultARPOptions() ARPOptions {
	return ARPOptions{Burst: 5, Interval: 200 * time.Millisecond, Refresh: 10 * time.Second}
}

// Validate reports options NewARPAnnouncer cannot work with.
func (o ARPOptions) Validate() error {
	var errs []error
	if o.Burst < 1 {
		errs = append(errs, fmt.Errorf("garp burst must be at least 1, got %d", o.Burst))
	}
	if o.Burst > 1 && o.Interval <= 0 {
		errs = append(errs, fmt.Errorf("garp interval must be positive with a burst of %d, got %v", o.Burst, o.Interval))
	}
	if o.Refresh < 0 {
		errs = append(errs, fmt.Errorf("garp refresh must be 0 (off) or positive, got %v", o.Refresh))
	}
	for _, p := range o.Managed {
		if !p.IsValid() || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("managed VIP %v is not an IPv4 prefix", p))
		}
	}
	return errors.Join(errs...)
}

// ARPAnnouncer is the active-passive Announcer: it puts a VIP on an
// Ethernet interface and announces it with gratuitous ARP, a burst on every
// Claim and then an optional periodic refresh, sent by a goroutine that
// Close stops.
//
// It works in the network namespace that was current (for the calling
// thread) when NewARPAnnouncer ran: its netlink and packet sockets are
// opened there, so later calls may come from any goroutine.
type ARPAnnouncer struct {
	ifname string
	opts   ARPOptions
	log    *slog.Logger
	nl     *netlink.Handle
	mac    net.HardwareAddr
	client *arp.Client

	wake    chan struct{} // cap 1: the schedule changed
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when the sender goroutine has returned

	// life is held shared by every method using the sockets, and
	// exclusively by Close, so that no socket is closed while in use.
	life   sync.RWMutex
	closed bool // under life

	// mu guards the fields below and is held while sending, so that a GARP
	// is never sent for a VIP after Release has taken it off the schedule.
	mu      sync.Mutex
	managed map[netip.Addr]bool
	sched   map[netip.Addr]*garpState
}

// garpState is the announcement schedule of one claimed VIP.
type garpState struct {
	burstLeft int       // GARPs of the burst still to send
	next      time.Time // when the next one is due
}

var _ Announcer = (*ARPAnnouncer)(nil)

// NewARPAnnouncer opens an announcer for the Ethernet interface ifaceName,
// in the caller's current network namespace. The interface must exist and
// have an IPv4 address of its own (the ARP client requires one).
func NewARPAnnouncer(ifaceName string, opts ARPOptions) (*ARPAnnouncer, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("vip: arp announcer: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	a, err := newARPAnnouncer(h, ifaceName, opts, log)
	if err != nil {
		h.Close()
		return nil, err
	}
	go a.sender()
	return a, nil
}

func newARPAnnouncer(h *netlink.Handle, ifaceName string, opts ARPOptions, log *slog.Logger) (*ARPAnnouncer, error) {
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		return nil, fmt.Errorf("vip: netlink: %w", err)
	}
	link, err := h.LinkByName(ifaceName)
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", ifaceName, err)
	}
	la := link.Attrs()
	if len(la.HardwareAddr) != 6 || isZero(la.HardwareAddr) {
		return nil, fmt.Errorf("vip: interface %s has no Ethernet address (%q)", ifaceName, la.HardwareAddr)
	}
	ifi := &net.Interface{Index: la.Index, MTU: la.MTU, Name: la.Name, HardwareAddr: la.HardwareAddr, Flags: la.Flags}
	// A raw ARP socket that receives nothing: the announcer only sends,
	// and unread frames would pile up in the socket's buffer.
	dropAll, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return nil, fmt.Errorf("vip: assembling the packet filter: %w", err)
	}
	pc, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), &packet.Config{Filter: dropAll})
	if err != nil {
		return nil, fmt.Errorf("vip: packet socket on %s: %w", ifaceName, err)
	}
	client, err := arp.New(ifi, pc)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("vip: arp client on %s: %w", ifaceName, err)
	}
	a := &ARPAnnouncer{
		ifname:  ifaceName,
		opts:    opts,
		log:     log.With("iface", ifaceName),
		nl:      h,
		mac:     slices.Clone(la.HardwareAddr),
		client:  client,
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		managed: map[netip.Addr]bool{},
		sched:   map[netip.Addr]*garpState{},
	}
	for _, p := range opts.Managed {
		a.managed[p.Addr()] = true
	}
	return a, nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Claim adds addr to the interface (idempotently: an address already there
// is replaced in place), sends the first GARP of a burst at once and hands
// the rest of the burst, and the refresh, to the sender goroutine. Claiming
// a held VIP re-announces it. The error, if any, is the address change's or
// the first GARP's; in the latter case the address is held and the burst
// goes on.
func (a *ARPAnnouncer) Claim(ctx context.Context, addr netip.Prefix) error {
	if !addr.IsValid() || !addr.Addr().Is4() {
		return fmt.Errorf("vip: %v is not an IPv4 prefix", addr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a.life.RLock()
	defer a.life.RUnlock()
	if a.closed {
		return ErrClosed
	}
	a.mu.Lock()
	a.managed[addr.Addr()] = true
	a.mu.Unlock()
	if !a.leaseOK() {
		return ErrLeaseLost
	}
	link, err := a.nl.LinkByName(a.ifname)
	if err != nil {
		return fmt.Errorf("vip: claim %v: interface %s: %w", addr, a.ifname, err)
	}
	if err := a.nl.AddrReplace(link, nlAddr(addr)); err != nil {
		return fmt.Errorf("vip: claim %v: adding it to %s: %w", addr, a.ifname, err)
	}

	a.mu.Lock()
	st := &garpState{burstLeft: a.opts.Burst}
	a.sched[addr.Addr()] = st
	err = a.announceLocked(addr.Addr(), st, time.Now())
	a.mu.Unlock()
	a.poke()
	a.log.Debug("vip added, announcing", "vip", addr, "burst", a.opts.Burst)
	if err != nil {
		return fmt.Errorf("vip: claim %v: first gratuitous ARP: %w", addr, err)
	}
	return nil
}

// Release stops announcing addr and removes it from the interface. An
// address already gone is not an error.
func (a *ARPAnnouncer) Release(ctx context.Context, addr netip.Prefix) error {
	if !addr.IsValid() || !addr.Addr().Is4() {
		return fmt.Errorf("vip: %v is not an IPv4 prefix", addr)
	}
	a.life.RLock()
	defer a.life.RUnlock()
	if a.closed {
		return ErrClosed
	}
	a.mu.Lock()
	delete(a.sched, addr.Addr())
	a.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	link, err := a.nl.LinkByName(a.ifname)
	if err != nil {
		return fmt.Errorf("vip: release %v: interface %s: %w", addr, a.ifname, err)
	}
	if err := a.nl.AddrDel(link, nlAddr(addr)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("vip: release %v: removing it from %s: %w", addr, a.ifname, err)
	}
	a.log.Debug("vip removed", "vip", addr)
	return nil
}

// Held lists the managed VIPs (see ARPOptions.Managed) on the interface
// now, as the kernel reports them, sorted.
func (a *ARPAnnouncer) Held() ([]netip.Prefix, error) {
	a.life.RLock()
	defer a.life.RUnlock()
	if a.closed {
		return nil, ErrClosed
	}
	a.mu.Lock()
	managed := maps.Clone(a.managed)
	a.mu.Unlock()
	all, err := listAddrs(a.nl, a.ifname)
	if err != nil {
		return nil, err
	}
	var held []netip.Prefix
	for _, p := range all {
		if managed[p.Addr()] {
			held = append(held, p)
		}
	}
	return held, nil
}

// Close stops the sender goroutine and closes the sockets. It leaves the
// addresses on the interface. It is idempotent.
func (a *ARPAnnouncer) Close() error {
	a.life.Lock()
	if a.closed {
		a.life.Unlock()
		return nil
	}
	a.closed = true
	a.life.Unlock()
	// No method is using the sockets now, and none will.
	close(a.quit)
	<-a.stopped
	err := a.client.Close()
	a.nl.Close()
	return err
}

// poke wakes the sender goroutine without blocking; wake-ups coalesce.
func (a *ARPAnnouncer) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *ARPAnnouncer) leaseOK() bool {
	return a.opts.LeaseOK == nil || a.opts.LeaseOK()
}

// sender sends the GARPs that fall due, until Close.
func (a *ARPAnnouncer) sender() {
	defer close(a.stopped)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := a.sendDue(time.Now())
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(time.Until(next))
		}
		select {
		case <-a.quit:
			return
		case <-a.wake:
		case <-timer.C:
		}
	}
}

// sendDue sends every GARP due at now and returns when the next one is due
// (zero: none scheduled).
func (a *ARPAnnouncer) sendDue(now time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var next time.Time
	for _, vip := range slices.SortedFunc(maps.Keys(a.sched), netip.Addr.Compare) {
		st := a.sched[vip]
		if !st.next.After(now) {
			if err := a.announceLocked(vip, st, now); err != nil {
				a.log.Warn("gratuitous ARP failed", "vip", vip, "err", err)
			}
		}
		if st.next.IsZero() { // burst done, no refresh
			delete(a.sched, vip)
			continue
		}
		if next.IsZero() || st.next.Before(next) {
			next = st.next
		}
	}
	return next
}

// announceLocked sends one GARP in both forms for vip, unless the lease
// says no, and advances st (a zero st.next means nothing more to send).
// a.mu must be held.
func (a *ARPAnnouncer) announceLocked(vip netip.Addr, st *garpState, now time.Time) error {
	if st.burstLeft > 0 {
		st.burstLeft--
	}
	switch {
	case st.burstLeft > 0:
		st.next = now.Add(a.opts.Interval)
	case a.opts.Refresh > 0:
		st.next = now.Add(a.opts.Refresh)
	default:
		st.next = time.Time{}
	}
	if !a.leaseOK() {
		a.log.Debug("gratuitous ARP skipped: lease does not hold", "vip", vip)
		return nil
	}
	req, rep, err := garpPackets(a.mac, vip)
	if err != nil {
		return err
	}
	if err := a.client.SetWriteDeadline(now.Add(time.Second)); err != nil {
		return err
	}
	return errors.Join(a.client.WriteTo(req, ethernet.Broadcast), a.client.WriteTo(rep, ethernet.Broadcast))
}

// garpPackets returns the two gratuitous ARPs the Linux kernel accepts as
// such for vip at mac: a request whose sender and target IP are the VIP
// (target MAC zero), and a reply whose target MAC and IP equal the sender's.
// (A reply to the broadcast MAC is not treated as gratuitous, and is
// ignored within locktime of the entry's last update.)
func garpPackets(mac net.HardwareAddr, vip netip.Addr) (req, rep *arp.Packet, err error) {
	if !vip.Is4() {
		return nil, nil, fmt.Errorf("vip: gratuitous ARP for %v: not IPv4", vip)
	}
	req, err = arp.NewPacket(arp.OperationRequest, mac, vip, net.HardwareAddr{0, 0, 0, 0, 0, 0}, vip)
	if err != nil {
		return nil, nil, fmt.Errorf("vip: gratuitous ARP request for %v from %v: %w", vip, mac, err)
	}
	rep, err = arp.NewPacket(arp.OperationReply, mac, vip, mac, vip)
	if err != nil {
		return nil, nil, fmt.Errorf("vip: gratuitous ARP reply for %v from %v: %w", vip, mac, err)
	}
	return req, rep, nil
}

// GARPFrames returns the two Ethernet frames an ARPAnnouncer sends to
// announce vip at mac, byte for byte as they leave the interface (without
// FCS): broadcast destination, source mac, EtherType ARP, the ARP payload
// (a request with sender IP = target IP = vip and target MAC zero; a reply
// with target MAC = mac and target IP = vip), zero-padded to 60 bytes.
func GARPFrames(mac net.HardwareAddr, vip netip.Addr) (request, reply []byte, err error) {
	req, rep, err := garpPackets(mac, vip)
	if err != nil {
		return nil, nil, err
	}
	frame := func(p *arp.Packet) ([]byte, error) {
		pb, err := p.MarshalBinary()
		if err != nil {
			return nil, err
		}
		// As arp.Client.WriteTo frames it.
		f := &ethernet.Frame{Destination: ethernet.Broadcast, Source: p.SenderHardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}
		return f.MarshalBinary()
	}
	if request, err = frame(req); err != nil {
		return nil, nil, err
	}
	if reply, err = frame(rep); err != nil {
		return nil, nil, err
	}
	return request, reply, nil
}

// nlAddr is the netlink form of p, on a link given separately.
func nlAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
}

// listAddrs reads the IPv4 addresses of the named interface, sorted. A
// dump interrupted by a concurrent change is retried (bounded).
func listAddrs(h *netlink.Handle, ifname string) ([]netip.Prefix, error) {
	link, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("vip: interface %s: %w", ifname, err)
	}
	var addrs []netlink.Addr
	for range 5 {
		addrs, err = h.AddrList(link, netlink.FAMILY_V4)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("vip: addresses of %s: %w", ifname, err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, na := range addrs {
		if na.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(na.IP)
		if !ok {
			continue
		}
		ones, _ := na.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	slices.SortFunc(out, comparePrefix)
	return out, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
