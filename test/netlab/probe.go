package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A Probe is a client's request stream into a lab: one HTTP GET every
// 10 ms from the client namespace, each on a new connection (connect
// timeout 1.5 s, whole request 5 s), until Finish or a bounded number of
// requests. It records which node answered each request.
//
// Each connection has a local port of its own (probePorts), so that no
// connection reuses the address pair of an earlier one: a node can still
// hold an earlier connection whose end the client sent to another node (the
// VIP moved meanwhile), and a new SYN on the same pair then meets a
// challenge ACK, a reset and a SYN retransmitted after the connect timeout.
type Probe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	res  []*probeResult
}

type probeResult struct {
	sent, done time.Time
	ok         bool
	via        string
	err        string
}

// StartProbe starts the stream to url; at most max requests are sent.
// node names the node that served a request from the answer's body
// (trimmed of spaces).
func StartProbe(l *Lab, url string, max int, node func(body string) string) *Probe {
	c := l.Client()
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
			defer cancel()
			var err error
			for range 8 { // a port still in use (TIME_WAIT after a wrap): the next
				var conn net.Conn
				conn, err = l.DialFrom(ctx, c, l.probePorts.next(), network, addr)
				if !errors.Is(err, syscall.EADDRINUSE) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
					return conn, err
				}
			}
			return nil, err
		},
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	p := &Probe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for range max {
			r := &probeResult{sent: time.Now()}
			p.mu.Lock()
			p.res = append(p.res, r)
			p.mu.Unlock()
			wg.Go(func() {
				body, err := fetch(hc, url)
				p.mu.Lock()
				defer p.mu.Unlock()
				r.done = time.Now()
				if err != nil {
					r.err = err.Error()
				} else {
					r.ok, r.via = true, node(body)
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

// ServedBy reports whether a request sent after t succeeded through node.
func (p *Probe) ServedBy(t time.Time, node string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.res {
		if r.ok && r.via == node && r.sent.After(t) {
			return true
		}
	}
	return false
}

// WaitServed waits up to d for ServedBy(t, node) and returns when it held.
func (p *Probe) WaitServed(t time.Time, node string, d time.Duration) (time.Time, bool) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if p.ServedBy(t, node) {
			return time.Now(), true
		}
	}
	return time.Time{}, false
}

// ProbeSummary is what a stream saw.
type ProbeSummary struct {
	Sent, Failed int
	Gap          time.Duration // first failure to the first success sent after it
	Silence      time.Duration // longest time between two completed requests
	Slowest      time.Duration // the slowest success
	Via          map[string]int
	LastVia      string   // the node that served the last success
	SomeErr      string   // the first failure's error
	Fails        []string // the first failures, sent relative to Finish's t0
}

func (s ProbeSummary) String() string {
	return fmt.Sprintf("%d requests, %d failed, client-observed gap %v (first failure to first success after it), longest time without a completed request %v, slowest success %v, served by %v",
		s.Sent, s.Failed, s.Gap.Round(time.Millisecond), s.Silence.Round(time.Millisecond), s.Slowest.Round(time.Millisecond), s.Via)
}

// Finish stops the stream, waits for the requests in flight and sums up;
// failures are described relative to t0.
func (p *Probe) Finish(t0 time.Time) ProbeSummary {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	s := ProbeSummary{Sent: len(p.res), Via: map[string]int{}}
	var first *probeResult
	var dones []time.Time
	for _, r := range p.res {
		if !r.ok {
			s.Failed++
			if len(s.Fails) < 8 {
				s.Fails = append(s.Fails, fmt.Sprintf("sent T0%+dms, failed after %v: %s",
					r.sent.Sub(t0).Milliseconds(), r.done.Sub(r.sent).Round(time.Millisecond), r.err))
			}
			if first == nil {
				first, s.SomeErr = r, r.err
			}
			continue
		}
		s.Via[r.via]++
		s.LastVia = r.via
		s.Slowest = max(s.Slowest, r.done.Sub(r.sent))
		dones = append(dones, r.done)
		if first != nil && s.Gap == 0 {
			s.Gap = r.sent.Sub(first.sent)
		}
	}
	slices.SortFunc(dones, time.Time.Compare)
	for k := 1; k < len(dones); k++ {
		s.Silence = max(s.Silence, dones[k].Sub(dones[k-1]))
	}
	return s
}

// probePorts hands out the probes' local ports in turn, below the kernel's
// ephemeral range (the client namespace's other connections take theirs
// there): at one connection per 10 ms a port comes back after about four
// minutes, long after TIME_WAIT.
type probePorts struct{ n atomic.Uint32 }

const probePortLow, probePortCount = 10000, 22000

func (p *probePorts) next() uint16 {
	return uint16(probePortLow + (p.n.Add(1)-1)%probePortCount)
}
