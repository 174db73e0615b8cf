package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// AddRouter adds a router namespace <lab>-r1 to the lab: its eth0 is a
// port (r1) of the lab's bridge, at .1 of the lab's subnet, with MAC
// 02:77:<third octet>:00:00:01. It forwards IPv4
// (net.ipv4.ip_forward=1), hashes multipath routes on L4
// (fib_multipath_hash_policy=1, so that ECMP spreads one client's
// connections), sends no ICMP redirects (a client on the segment may route
// VIPs through it: `ip route add VIP/32 via <router>`) and has IPv6
// disabled. It runs nothing: start a route daemon in it with Lab.Start.
//
// The router is removed by a cleanup registered here, which runs before
// the lab's own (processes in it are ended first); on error, whatever was
// created is removed before AddRouter returns. Call it once per lab, on
// the test goroutine or not, before Close.
func (l *Lab) AddRouter() (*Host, error) {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("netlab: AddRouter after the lab was closed")
	}
	r := l.newHost("r1", 1)
	if _, err := os.Lstat(filepath.Join(netnsDir, r.ns)); err == nil {
		return nil, fmt.Errorf("netlab: lab %s already has a router", l.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ipCmd(ctx, nil, "netns", "add", r.ns); err != nil {
		return nil, err
	}
	remove := func() error {
		if _, err := os.Lstat(filepath.Join(netnsDir, r.ns)); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err := killIn([]string{r.ns}, time.Second, 5*time.Second); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Deleting the namespace destroys eth0 and with it the switch port.
		return ipCmd(ctx, nil, "netns", "del", r.ns)
	}
	l.t.Cleanup(func() {
		if err := remove(); err != nil {
			l.t.Errorf("netlab: cleanup of router %s: %v", r.ns, err)
		}
	})
	if err := l.buildRouter(ctx, r); err != nil {
		return nil, errors.Join(fmt.Errorf("netlab: building router %s: %w", r.ns, err), remove())
	}
	return r, nil
}

func (l *Lab) buildRouter(ctx context.Context, r *Host) error {
	required := map[string]string{
		"net.ipv4.conf.all.rp_filter":            "0",
		"net.ipv4.conf.default.rp_filter":        "0",
		"net.ipv4.conf.all.arp_accept":           "0",
		"net.ipv4.conf.default.arp_accept":       "0",
		"net.ipv4.conf.all.send_redirects":       "0",
		"net.ipv4.conf.default.send_redirects":   "0",
		"net.ipv4.ip_forward":                    "1",
		"net.ipv4.fib_multipath_hash_policy":     "1",
		"net.ipv4.conf.all.accept_redirects":     "0",
		"net.ipv4.conf.default.accept_redirects": "0",
	}
	optional := map[string]string{
		"net.ipv6.conf.all.disable_ipv6":     "1",
		"net.ipv6.conf.default.disable_ipv6": "1",
	}
	if err := l.setSysctls(r, required, optional, nil, nil); err != nil {
		return err
	}
	sw := fmt.Sprintf("link add %s type veth peer name eth0 address %s netns %s\nlink set %s master br0 up\n",
		r.port, r.mac, r.ns, r.port)
	if err := ipCmd(ctx, strings.NewReader(sw), "-n", l.sw.ns, "-batch", "-"); err != nil {
		return err
	}
	script := fmt.Sprintf("link set lo up\naddr add %s/24 dev eth0\nlink set eth0 up\n", r.addr)
	if err := ipCmd(ctx, strings.NewReader(script), "-n", r.ns, "-batch", "-"); err != nil {
		return err
	}
	// Bounded wait for carrier on both ends.
	var last string
	for range 100 {
		a, err := exec.CommandContext(ctx, "ip", "-n", l.sw.ns, "-o", "link", "show", "dev", r.port).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -n %s link show %s: %v: %s", l.sw.ns, r.port, err, a)
		}
		b, err := exec.CommandContext(ctx, "ip", "-n", r.ns, "-o", "link", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -n %s link show eth0: %v: %s", r.ns, err, b)
		}
		last = string(a) + string(b)
		if countUp(last) == 2 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("router link not up after 2 s:\n%s", last)
}
