package failover

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// The client: one HTTP request every 10 ms to the VIP from the client
// namespace, each on a new connection (connect timeout 1.5 s, whole
// request 5 s). Every node's server answers with the node's name.

const (
	probeEvery   = 10 * time.Millisecond
	probeConnect = 1500 * time.Millisecond
	probeTotal   = 5 * time.Second
	probeMax     = 4000 // bounded: 40 s of requests at most
)

type result struct {
	sent, done time.Time
	ok         bool
	via        string
	err        string
}

type probe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	res  []*result
}

func startProbe(lab *netlab.Lab, url string) *probe {
	c := lab.Client()
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, probeConnect)
			defer cancel()
			return lab.Dial(ctx, c, network, addr)
		},
	}
	hc := &http.Client{Transport: tr, Timeout: probeTotal}
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for range probeMax {
			r := &result{sent: time.Now()}
			p.mu.Lock()
			p.res = append(p.res, r)
			p.mu.Unlock()
			wg.Go(func() {
				via, err := fetch(hc, url)
				p.mu.Lock()
				defer p.mu.Unlock()
				r.done = time.Now()
				if err != nil {
					r.err = err.Error()
				} else {
					r.ok, r.via = true, via
				}
			})
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func fetch(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), nil
}

// servedBy reports whether a request sent after t succeeded through name.
func (p *probe) servedBy(t time.Time, name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.res {
		if r.ok && r.via == name && r.sent.After(t) {
			return true
		}
	}
	return false
}

// waitServed waits up to d for servedBy(t, name).
func (p *probe) waitServed(t time.Time, name string, d time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if p.servedBy(t, name) {
			return time.Now(), true
		}
	}
	return time.Time{}, false
}

type summary struct {
	sent, failed int
	gap          time.Duration // first failure to the first success sent after it
	silence      time.Duration // longest time between two completed requests
	slowest      time.Duration
	via          map[string]int
	lastVia      string
	fails        []string
}

func (s summary) String() string {
	return fmt.Sprintf("%d requests, %d failed, gap %v, longest without a completed request %v, slowest success %v, served by %v",
		s.sent, s.failed, s.gap.Round(time.Millisecond), s.silence.Round(time.Millisecond), s.slowest.Round(time.Millisecond), s.via)
}

// finish stops the stream, waits for the requests in flight and sums up;
// failures are described relative to t0.
func (p *probe) finish(t0 time.Time) summary {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	s := summary{sent: len(p.res), via: map[string]int{}}
	var first *result
	var dones []time.Time
	for _, r := range p.res {
		if !r.ok {
			s.failed++
			if len(s.fails) < 4 {
				s.fails = append(s.fails, fmt.Sprintf("sent T0%+dms, failed after %v: %s",
					r.sent.Sub(t0).Milliseconds(), r.done.Sub(r.sent).Round(time.Millisecond), r.err))
			}
			if first == nil {
				first = r
			}
			continue
		}
		s.via[r.via]++
		s.lastVia = r.via
		s.slowest = max(s.slowest, r.done.Sub(r.sent))
		dones = append(dones, r.done)
		if first != nil && s.gap == 0 {
			s.gap = r.sent.Sub(first.sent)
		}
	}
	slices.SortFunc(dones, time.Time.Compare)
	for k := 1; k < len(dones); k++ {
		s.silence = max(s.silence, dones[k].Sub(dones[k-1]))
	}
	return s
}
