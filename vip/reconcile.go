package vip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultResync is how often a Reconciler compares desired and actual
// addresses when nothing wakes it.
const DefaultResync = time.Second

// minRetry is the first delay before a pass that failed is retried; it
// doubles up to the resync period.
const minRetry = 100 * time.Millisecond

// Reconciler is the one level-triggered loop that makes the VIPs this node
// holds match the VIPs it should hold. Every pass reads the desired set
// and the actual one (Announcer.Held, from the system), claims what is
// desired and missing, and releases what is held but not desired, also on
// the first pass, so that addresses left by a crashed previous run go.
// Events (leadership, membership, config) only wake it: Wake to
// re-evaluate, Kick to also re-announce every desired VIP.
type Reconciler struct {
	a       Announcer
	desired func() []netip.Prefix
	log     *slog.Logger
	resync  time.Duration

	wake    chan struct{} // cap 1; coalesces wake-ups
	kick    atomic.Bool   // re-announce all desired VIPs on the next pass
	running atomic.Bool

	// retry holds desired VIPs whose last Claim failed: they are claimed
	// again on the next pass even if the address is there. Only the loop
	// touches it.
	retry map[netip.Prefix]bool

	mu     sync.Mutex
	status ReconcileStatus
}

// ReconcileStatus is what `fulcrum vip status` shows: the loop's view
// after its latest pass.
type ReconcileStatus struct {
	// Desired are the VIPs this node should hold.
	Desired []netip.Prefix `json:"desired"`
	// Actual are the VIPs it holds, read from the system after the pass.
	Actual []netip.Prefix `json:"actual"`
	// LastAnnounce is when a Claim last succeeded (address added and
	// announcement started).
	LastAnnounce time.Time `json:"last_announce,omitzero"`
	// LastPass is when the latest pass ended.
	LastPass time.Time `json:"last_pass,omitzero"`
	// LastError is the latest pass's first error; empty when it succeeded.
	LastError string `json:"last_error,omitempty"`
	// LastErrorAt is when LastError happened (zero when it is empty).
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// ReconcilerOption adjusts a Reconciler.
type ReconcilerOption func(*Reconciler)

// WithResync sets the period of the passes nothing wakes (default
// DefaultResync). A non-positive d is ignored.
func WithResync(d time.Duration) ReconcilerOption {
	return func(r *Reconciler) {
		if d > 0 {
			r.resync = d
		}
	}
}

// NewReconciler returns a loop that keeps a's VIPs equal to desired(),
// which it calls once per pass from its own goroutine. Start it with Run.
func NewReconciler(a Announcer, desired func() []netip.Prefix, log *slog.Logger, opts ...ReconcilerOption) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{
		a:       a,
		desired: desired,
		log:     log,
		resync:  DefaultResync,
		wake:    make(chan struct{}, 1),
		retry:   map[netip.Prefix]bool{},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Wake asks for a pass soon. It never blocks; wake-ups coalesce. It is
// safe to call from any goroutine, including callbacks that must not block.
func (r *Reconciler) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Kick asks for a pass that also re-announces every desired VIP (Claim
// again, so a GARP burst), as after a membership change. It never blocks.
func (r *Reconciler) Kick() {
	r.kick.Store(true)
	r.Wake()
}

// Status returns a copy of the loop's latest view.
func (r *Reconciler) Status() ReconcileStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status
	s.Desired = slices.Clone(s.Desired)
	s.Actual = slices.Clone(s.Actual)
	return s
}

// Run runs passes until ctx ends, then returns ctx.Err(). It leaves the
// addresses as they are when it returns (drop them by making desired()
// empty and waiting for a pass first). Run may be called once.
func (r *Reconciler) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("vip: reconciler already running")
	}
	timer := time.NewTimer(r.resync) // always Reset before use
	defer timer.Stop()
	retry := minRetry
	first := true
	for {
		wait := r.resync
		if err := r.pass(ctx, first); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait = min(retry, r.resync)
			retry *= 2
		} else {
			retry = minRetry
		}
		first = false
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// pass compares desired and actual once and acts on the difference. On
// the first pass every desired VIP is claimed, held or not: this process
// has not announced it yet.
func (r *Reconciler) pass(ctx context.Context, first bool) error {
	kick := r.kick.Swap(false) || first
	desired := normalize(r.desired())
	var errs []error
	note := func(err error) {
		errs = append(errs, err)
	}
	actual, err := r.a.Held()
	if err != nil {
		note(fmt.Errorf("reading held VIPs: %w", err))
		// Do not act on an unknown state; keep a pending kick.
		if kick {
			r.kick.Store(true)
		}
		r.record(desired, nil, false, errs)
		return errs[0]
	}
	announced := false
	for _, p := range actual {
		if slices.Contains(desired, p) {
			continue
		}
		reason := "not desired"
		if first {
			reason = "not desired, found at start-up"
		}
		if err := r.a.Release(ctx, p); err != nil {
			note(fmt.Errorf("releasing %v: %w", p, err))
			r.log.Warn("vip release failed", "vip", p, "reason", reason, "err", err)
			continue
		}
		r.log.Info("vip released", "vip", p, "reason", reason)
	}
	for _, p := range desired {
		var reason string
		switch {
		case !slices.Contains(actual, p):
			reason = "desired, not held"
		case r.retry[p]:
			reason = "retrying a failed claim"
		case first:
			reason = "held at start-up: re-announcing"
		case kick:
			reason = "re-announce requested"
		default:
			continue
		}
		if err := r.a.Claim(ctx, p); err != nil {
			r.retry[p] = true
			note(fmt.Errorf("claiming %v: %w", p, err))
			r.log.Warn("vip claim failed", "vip", p, "reason", reason, "err", err)
			continue
		}
		delete(r.retry, p)
		announced = true
		r.log.Info("vip claimed", "vip", p, "reason", reason)
	}
	for p := range r.retry {
		if !slices.Contains(desired, p) {
			delete(r.retry, p)
		}
	}
	after, err := r.a.Held()
	if err != nil {
		note(fmt.Errorf("reading held VIPs: %w", err))
		after = nil
	}
	r.record(desired, after, announced, errs)
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func (r *Reconciler) record(desired, actual []netip.Prefix, announced bool, errs []error) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Desired = desired
	r.status.Actual = actual
	r.status.LastPass = now
	if announced {
		r.status.LastAnnounce = now
	}
	if len(errs) > 0 {
		r.status.LastError = errs[0].Error()
		if len(errs) > 1 {
			r.status.LastError += fmt.Sprintf(" (and %d more)", len(errs)-1)
		}
		r.status.LastErrorAt = now
	} else {
		r.status.LastError = ""
		r.status.LastErrorAt = time.Time{}
	}
}

// normalize drops invalid prefixes and duplicates and sorts the rest.
func normalize(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}
