package failover

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The two-holder sampler: every samplePause it reads the IPv4 addresses of
// every node's eth0 through a netlink socket opened inside the node's
// namespace (a round of three reads takes well under a millisecond, so a
// round is as good as a snapshot), and counts the rounds in which two or
// more counted nodes carry the VIP. A node whose daemon the benchmark
// SIGKILLed is not counted (its kernel keeps whatever address the daemon
// left, for every system alike) until a reading shows it without the VIP
// after its restart.

const samplePause = 5 * time.Millisecond

// netlinkIn opens a route netlink handle inside the named namespace. The
// socket stays in that namespace whatever thread later uses it; the
// thread that created it is left locked and so dies with its goroutine.
func netlinkIn(ns string) (*netlink.Handle, error) {
	type res struct {
		h   *netlink.Handle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		ch <- res{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

type round struct {
	at    time.Time
	holds []bool
}

type sampler struct {
	vip    netip.Addr
	names  []string
	hs     []*netlink.Handle
	stop   chan struct{}
	done   chan struct{}
	logf   func(string, ...any)
	mu     sync.Mutex
	last   round
	label  string
	excl   []bool // not counted
	untilD []bool // excluded until a reading without the VIP
	drops  []time.Time
	raw    map[string]int // rounds with >= 2 counted holders, per label
	conf   map[string]int // ... that the next round confirmed
	prev2  bool
	errs   int
	lastE  error
	rounds int
}

func startSampler(vip netip.Addr, names, nss []string, logf func(string, ...any)) (*sampler, error) {
	s := &sampler{vip: vip, names: names, stop: make(chan struct{}), done: make(chan struct{}), logf: logf,
		excl: make([]bool, len(nss)), untilD: make([]bool, len(nss)), drops: make([]time.Time, len(nss)),
		raw: map[string]int{}, conf: map[string]int{}}
	for _, ns := range nss {
		h, err := netlinkIn(ns)
		if err != nil {
			s.closeHandles()
			return nil, fmt.Errorf("sampler: netlink in %s: %w", ns, err)
		}
		s.hs = append(s.hs, h)
	}
	go s.run()
	return s, nil
}

func (s *sampler) closeHandles() {
	for _, h := range s.hs {
		h.Close()
	}
}

func (s *sampler) close() {
	close(s.stop)
	<-s.done
	s.closeHandles()
}

func (s *sampler) holds(h *netlink.Handle) (bool, error) {
	l, err := h.LinkByName("eth0")
	if err != nil {
		return false, err
	}
	as, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == s.vip {
			return true, nil
		}
	}
	return false, nil
}

func (s *sampler) run() {
	defer close(s.done)
	for {
		r := round{holds: make([]bool, len(s.hs))}
		var rerr error
		for i, h := range s.hs {
			v, err := s.holds(h)
			if err != nil {
				rerr = err
			}
			r.holds[i] = v
		}
		r.at = time.Now()
		s.mu.Lock()
		s.rounds++
		if rerr != nil {
			s.errs++
			s.lastE = rerr
		} else {
			n := 0
			for i, v := range r.holds {
				if s.untilD[i] && !v {
					s.untilD[i], s.excl[i] = false, false
					s.drops[i] = r.at
				}
				if v && !s.excl[i] {
					n++
				}
			}
			if n >= 2 {
				s.raw[s.label]++
				if s.prev2 {
					s.conf[s.label]++
				}
				if s.raw[s.label] <= 5 {
					s.logf("sampler [%s]: two holders at %s: %v (excluded %v)", s.label, r.at.Format("15:04:05.000"), r.holds, s.excl)
				}
			}
			s.prev2 = n >= 2
			s.last = r
		}
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		case <-time.After(samplePause):
		}
	}
}

// setLabel makes the following rounds count for label.
func (s *sampler) setLabel(label string) {
	s.mu.Lock()
	s.label = label
	s.mu.Unlock()
}

func (s *sampler) exclude(i int) {
	s.mu.Lock()
	s.excl[i], s.untilD[i] = true, false
	s.mu.Unlock()
}

// excludeUntilDrop keeps node i excluded until a reading shows it without
// the VIP.
func (s *sampler) excludeUntilDrop(i int) {
	s.mu.Lock()
	s.excl[i], s.untilD[i] = true, true
	s.drops[i] = time.Time{}
	s.mu.Unlock()
}

func (s *sampler) dropped(i int) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops[i], !s.drops[i].IsZero()
}

func (s *sampler) counts(label string) (raw, confirmed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw[label], s.conf[label]
}

// latest waits for a round that started after now and returns it.
func (s *sampler) latest() (round, error) {
	since := time.Now()
	deadline := since.Add(2 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		r := s.last
		errs, lastE := s.errs, s.lastE
		s.mu.Unlock()
		if r.at.After(since) {
			return r, nil
		}
		time.Sleep(time.Millisecond)
		if errs > 100 {
			return round{}, fmt.Errorf("sampler: %d read errors, last: %w", errs, lastE)
		}
	}
	return round{}, errors.New("sampler: no reading for 2 s")
}

// waitHolder waits until exactly one node that is not ignored holds the
// VIP, and no other counted node does; it returns the node and when the
// round that showed it was read.
func (s *sampler) waitHolder(d time.Duration, ignore int) (int, time.Time, error) {
	deadline := time.Now().Add(d)
	var last round
	for {
		r, err := s.latest()
		if err != nil {
			return -1, time.Time{}, err
		}
		last = r
		s.mu.Lock()
		excl := append([]bool(nil), s.excl...)
		s.mu.Unlock()
		who, n := -1, 0
		for i, v := range r.holds {
			if i == ignore || !v {
				continue
			}
			if excl[i] {
				continue
			}
			who = i
			n++
		}
		if n == 1 {
			return who, r.at, nil
		}
		if time.Now().After(deadline) {
			return -1, time.Time{}, fmt.Errorf("after %v the VIP is on %v (excluded %v, ignoring %d), want exactly one node", d, last.holds, excl, ignore)
		}
	}
}

// holdsNow reports whether node i carries the VIP in a fresh round.
func (s *sampler) holdsNow(i int) (bool, error) {
	r, err := s.latest()
	if err != nil {
		return false, err
	}
	return r.holds[i], nil
}

func (s *sampler) stats() (rounds, errs int, lastE error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rounds, s.errs, s.lastE
}
