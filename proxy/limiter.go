package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// limiter caps concurrent requests on a server or backend (maxconn) and
// queues the excess in arrival order. A released slot is handed straight to
// the oldest waiter, so a queued request cannot be overtaken.
type limiter struct {
	max    int
	active atomic.Int64

	mu      sync.Mutex
	waiters []chan struct{}
}

func newLimiter(max int) *limiter { return &limiter{max: max} }

func (l *limiter) load() int64 { return l.active.Load() }

// tryAcquire takes a slot if one is free.
func (l *limiter) tryAcquire() bool {
	if l.max <= 0 {
		l.active.Add(1)
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if int(l.active.Load()) < l.max && len(l.waiters) == 0 {
		l.active.Add(1)
		return true
	}
	return false
}

// acquire takes a slot, waiting in the queue up to timeout. It reports
// false when the wait timed out or done was closed.
func (l *limiter) acquire(timeout time.Duration, done <-chan struct{}, c *Counters) bool {
	if l.tryAcquire() {
		return true
	}
	l.mu.Lock()
	if int(l.active.Load()) < l.max && len(l.waiters) == 0 {
		l.active.Add(1)
		l.mu.Unlock()
		return true
	}
	ch := make(chan struct{}, 1)
	l.waiters = append(l.waiters, ch)
	l.mu.Unlock()
	c.queueEnter()
	defer c.queueLeave()

	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-done:
	}
	l.mu.Lock()
	for i, w := range l.waiters {
		if w == ch {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			l.mu.Unlock()
			return false
		}
	}
	l.mu.Unlock()
	// A slot was handed over between the timeout and the lock: give it back.
	<-ch
	l.release()
	return false
}

// release frees a slot, handing it to the oldest waiter if any.
func (l *limiter) release() {
	if l.max <= 0 {
		l.active.Add(-1)
		return
	}
	l.mu.Lock()
	if len(l.waiters) > 0 {
		ch := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.mu.Unlock()
		ch <- struct{}{}
		return
	}
	l.active.Add(-1)
	l.mu.Unlock()
}
