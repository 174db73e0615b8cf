package health

import "time"

// Transition is a change of a server's up/down state.
type Transition int8

// The transitions.
const (
	NoChange Transition = iota
	WentUp
	WentDown
)

func (t Transition) String() string {
	switch t {
	case WentUp:
		return "UP"
	case WentDown:
		return "DOWN"
	}
	return "none"
}

// Intervals are HAProxy's inter, fastinter and downinter.
type Intervals struct {
	Inter, Fast, Down time.Duration
}

// Tracker is the rise/fall state machine of one server, HAProxy's health
// counter: it runs from 0 to rise+fall-1, the server is UP while it is at
// least rise. From full health, fall consecutive failures take the server
// DOWN; from DOWN (0), rise consecutive successes take it UP, to full
// health. A success while UP restores one step, so a server failing one
// check in three never goes down with fall >= 2.
//
// It is pure and clock-free; it reports a transition only when the state
// really changes. The zero value is not usable: use NewTracker.
type Tracker struct {
	rise, fall int
	health     int
	up         bool
}

// NewTracker returns a tracker in the given initial state. An initially up
// tracker starts at health rise, as HAProxy's servers at start-up: UP, but
// the first failure takes it down. A full UP needs rise+fall-1 health.
func NewTracker(rise, fall int, up bool) Tracker {
	t := Tracker{rise: max(rise, 1), fall: max(fall, 1), up: up}
	if up {
		t.health = t.rise
	}
	return t
}

func (t *Tracker) full() int { return t.rise + t.fall - 1 }

// Up reports whether the server is UP.
func (t *Tracker) Up() bool { return t.up }

// Health returns the health counter, 0 to Rise+Fall-1.
func (t *Tracker) Health() int { return t.health }

// Rise returns the configured rise.
func (t *Tracker) Rise() int { return t.rise }

// Fall returns the configured fall.
func (t *Tracker) Fall() int { return t.fall }

// Transitioning reports whether a transition is under way: an UP server
// below full health, or a DOWN server above zero.
func (t *Tracker) Transitioning() bool {
	if t.up {
		return t.health < t.full()
	}
	return t.health > 0
}

// Success records a passed check.
func (t *Tracker) Success() Transition {
	if t.health < t.full() {
		t.health++
	}
	if !t.up && t.health >= t.rise {
		t.health = t.full()
		t.up = true
		return WentUp
	}
	return NoChange
}

// Failure records a failed check.
func (t *Tracker) Failure() Transition {
	if t.health > t.rise {
		t.health--
		return NoChange
	}
	t.health = 0
	if t.up {
		t.up = false
		return WentDown
	}
	return NoChange
}

// SuddenDeath records a failure that leaves an UP server one failure away
// from DOWN (HAProxy's on-error sudden-death): from full health it counts
// as fall-1 failures.
func (t *Tracker) SuddenDeath() Transition {
	if t.health > t.rise {
		t.health = t.rise + 1
	}
	return t.Failure()
}

// ForceDown takes the server DOWN at once (on-error mark-down).
func (t *Tracker) ForceDown() Transition {
	t.health = 0
	if t.up {
		t.up = false
		return WentDown
	}
	return NoChange
}

// Reconfigure changes rise and fall, keeping the state: an UP tracker
// goes to the new full health, a DOWN one to zero.
func (t *Tracker) Reconfigure(rise, fall int) {
	t.rise, t.fall = max(rise, 1), max(fall, 1)
	if t.up {
		t.health = t.full()
	} else {
		t.health = 0
	}
}

// Next returns the interval before the next check: Down while fully DOWN,
// Fast while a transition is under way, Inter otherwise. A zero Fast or
// Down falls back to Inter.
func (t *Tracker) Next(iv Intervals) time.Duration {
	switch {
	case !t.up && t.health == 0 && iv.Down > 0:
		return iv.Down
	case t.Transitioning() && iv.Fast > 0:
		return iv.Fast
	}
	return iv.Inter
}
