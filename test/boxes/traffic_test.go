package boxes

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// backend is a demo server run by the test inside the client namespace: it
// answers with its name and counts the requests it got.
type backend struct {
	name string
	mu   sync.Mutex
	hits int
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.hits++
	b.mu.Unlock()
	io.WriteString(w, b.name+"\n")
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// get sends one GET and returns the status and the body without its
// newline.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// sample is one request of a stream.
type sample struct {
	at   time.Time // when it was sent
	took time.Duration
	ok   bool
	body string
	err  string
}

// stream sends one request (a new connection each) every interval until
// stopped, or until max requests: a client that keeps using the service.
type stream struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	samples []sample
}

func startStream(c *http.Client, url string, interval time.Duration, limit int) *stream {
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for range limit {
			start := time.Now()
			st, body, err := get(c, url)
			sm := sample{at: start, took: time.Since(start), ok: err == nil && st == 200, body: body}
			if err != nil {
				sm.err = err.Error()
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					sm.err = "timeout"
				}
			} else if st != 200 {
				sm.err = http.StatusText(st)
			}
			s.mu.Lock()
			s.samples = append(s.samples, sm)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// stop ends the stream and returns its samples.
func (s *stream) stop() []sample {
	s.cancel()
	<-s.done
	return s.snapshot()
}

func (s *stream) snapshot() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

// okAfter reports whether a request sent after t succeeded, and when.
func (s *stream) okAfter(t time.Time) (time.Time, bool) {
	for _, sm := range s.snapshot() {
		if sm.ok && sm.at.After(t) {
			return sm.at, true
		}
	}
	return time.Time{}, false
}

// streamStats summarises samples: failures, the longest time between two
// answered requests (the outage a client saw), and the errors by kind.
type streamStats struct {
	sent, failed int
	maxGap       time.Duration
	gapFrom      time.Time
	errs         map[string]int
	bodies       map[string]int
}

func stats(samples []sample) streamStats {
	st := streamStats{sent: len(samples), errs: map[string]int{}, bodies: map[string]int{}}
	var lastOK time.Time
	for _, sm := range samples {
		if !sm.ok {
			st.failed++
			e := sm.err
			if i := strings.LastIndex(e, ": "); i >= 0 {
				e = e[i+2:]
			}
			st.errs[e]++
			continue
		}
		st.bodies[sm.body]++
		end := sm.at.Add(sm.took)
		if !lastOK.IsZero() {
			if gap := end.Sub(lastOK); gap > st.maxGap {
				st.maxGap, st.gapFrom = gap, lastOK
			}
		}
		lastOK = end
	}
	return st
}
