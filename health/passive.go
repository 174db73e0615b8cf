package health

import "time"

// Passive counts the errors that live traffic meets on one server (HAProxy's
// observe with error-limit). The count decays: it is halved once per
// Period elapsed (the check interval), so a burst of Limit errors within
// an interval trips it, and so does a steady rate of about Limit/2 errors
// per interval, while sparse errors fade away. Successes do not reset it.
// When the count reaches Limit, Error reports true and the count restarts
// from zero. It is pure: the caller passes the time.
type Passive struct {
	Limit  int
	Period time.Duration
	errs   int
	last   time.Time
}

// Error records one error at now and reports whether the limit is reached.
func (p *Passive) Error(now time.Time) bool {
	p.decay(now)
	p.errs++
	if p.errs >= max(p.Limit, 1) {
		p.errs = 0
		return true
	}
	return false
}

// Count returns the decayed error count at now.
func (p *Passive) Count(now time.Time) int {
	p.decay(now)
	return p.errs
}

func (p *Passive) decay(now time.Time) {
	if p.last.IsZero() || p.Period <= 0 {
		p.last = now
		return
	}
	n := now.Sub(p.last) / p.Period
	if n <= 0 {
		return
	}
	if n >= 63 {
		p.errs = 0
	} else {
		p.errs >>= uint(n)
	}
	p.last = p.last.Add(n * p.Period)
}

// IsL7Error reports whether an HTTP status from live traffic counts as an
// error under observe layer7: HAProxy's rule, every 5xx but 501 and 505
// (which say more about the request than the server).
func IsL7Error(code int) bool {
	return code >= 500 && code <= 599 && code != 501 && code != 505
}

// SlowstartWeight is a server's weight during slowstart: it ramps from 1
// to weight over window after the server came UP (sinceUp ago), then stays
// at weight. A weight of 0 stays 0.
func SlowstartWeight(weight int, sinceUp, window time.Duration) int {
	if weight <= 0 {
		return 0
	}
	if window <= 0 || sinceUp >= window {
		return weight
	}
	sinceUp = max(sinceUp, 0)
	w := (int64(weight)*int64(sinceUp) + int64(window) - 1) / int64(window)
	return max(1, int(w))
}
