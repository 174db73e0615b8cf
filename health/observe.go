package health

import (
	"fmt"

	"github.com/fulcrum-lb/fulcrum/state"
)

// ObserveL4 feeds the outcome of a connection to a server from live
// traffic (observe layer4 and layer7). A success costs nothing.
func (m *Monitor) ObserveL4(backend, server string, ok bool) {
	if ok {
		return
	}
	if e := m.lookup(backend, server); e != nil && e.observe.Load() != observeNone {
		m.observeError(e, 0)
	}
}

// ObserveL7 feeds an HTTP status from live traffic (observe layer7): 5xx
// but 501 and 505 are errors. A success costs nothing.
func (m *Monitor) ObserveL7(backend, server string, status int) {
	if !IsL7Error(status) {
		return
	}
	if e := m.lookup(backend, server); e != nil && e.observe.Load() == observeL7 {
		m.observeError(e, status)
	}
}

func (m *Monitor) observeError(e *entry, code int) {
	now := m.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.removed || !e.checked || !e.passive.Error(now) {
		return
	}
	was := e.upLocked()
	last := "layer4 connection error"
	if code != 0 {
		last = fmt.Sprintf("HTTP status %d", code)
	}
	r := Result{Status: StatusHana, Reason: "Health analyze", Code: code,
		Detail: fmt.Sprintf("%d errors, last: %s, on_error %s", e.hc.ErrorLimit, last, e.hc.OnError)}
	switch e.hc.OnError {
	case state.OnErrorFastInter:
		e.fastOnce = true
	case state.OnErrorSuddenDeath:
		e.chkFail++
		e.tracker.SuddenDeath()
	case state.OnErrorMarkDown:
		e.chkFail++
		e.tracker.ForceDown()
	default: // fail-check
		e.chkFail++
		e.tracker.Failure()
	}
	// Shown as the last check (HAProxy's HANA), so that stats say why.
	e.last, e.lastCheck = r, now
	m.settleLocked(e, was, now, r)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}
