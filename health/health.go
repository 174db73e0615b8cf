// Package health checks backend servers and keeps their health state: the
// active checkers (TCP with send/expect, HTTP and HTTPS, TLS handshake,
// HAProxy's agent-check), the rise/fall state machine, passive observation
// of live traffic, slowstart, and the administrative states (MAINT, DRAIN,
// runtime weight).
//
// A Monitor runs the checks of one config and reports this node's
// transitions to an Observer. The engine reads the effective verdict
// through Verdicts, on every balancing decision, without locks or
// allocations. On a standalone node Local joins the two: this node's
// observations are the verdict. In a cluster the Observer forwards
// transitions to the leader and the agreed verdict comes back through
// Monitor.SetVerdict; neither this package nor the engine changes.
//
// The package imports only the schema types of package state.
package health

import (
	"fmt"
	"time"
)

// Status is a check status in HAProxy's vocabulary (L4OK, L7STS, ...).
type Status string

// The check statuses.
const (
	StatusL4OK    Status = "L4OK"    // layer 4 check passed (connected)
	StatusL4Tout  Status = "L4TOUT"  // layer 4 timeout
	StatusL4Con   Status = "L4CON"   // layer 4 connection problem
	StatusL6OK    Status = "L6OK"    // TLS handshake passed
	StatusL6Tout  Status = "L6TOUT"  // TLS handshake timeout
	StatusL6Rsp   Status = "L6RSP"   // TLS handshake failed
	StatusL7OK    Status = "L7OK"    // layer 7 check passed
	StatusL7Tout  Status = "L7TOUT"  // layer 7 timeout
	StatusL7Rsp   Status = "L7RSP"   // invalid or unexpected response
	StatusL7Sts   Status = "L7STS"   // wrong HTTP status, or agent reports down
	StatusSockErr Status = "SOCKERR" // local socket error
	StatusHana    Status = "HANA"    // passive health analysis (on_error)
	StatusIntErr  Status = "INTERR"  // the checker panicked
)

// Result is the outcome of one check.
type Result struct {
	OK     bool   `json:"ok"`
	Status Status `json:"status"`
	// Code is the HTTP status, when there was one.
	Code int `json:"code,omitempty"`
	// Reason is HAProxy's wording of the status ("Layer7 wrong status").
	Reason string `json:"reason"`
	// Detail adds what went wrong ("connection refused").
	Detail string `json:"detail,omitempty"`
	// Duration is how long the check took.
	Duration time.Duration `json:"duration"`
	// Agent is the parsed reply of an agent check.
	Agent *AgentReply `json:"agent,omitempty"`
}

func (r Result) String() string {
	s := fmt.Sprintf("%s %s", r.Status, r.Reason)
	if r.Code != 0 {
		s += fmt.Sprintf(", code %d", r.Code)
	}
	if r.Detail != "" {
		s += fmt.Sprintf(", info: %q", r.Detail)
	}
	return s
}

// State is a server's state as the engine sees it.
type State uint8

// The states, worst first.
const (
	StateMaint State = iota // administratively out, even if checks pass
	StateDown               // failed its checks (or the agent says down)
	StateDrain              // up, but takes no new sessions
	StateUp
)

var stateNames = [...]string{StateMaint: "MAINT", StateDown: "DOWN", StateDrain: "DRAIN", StateUp: "UP"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if equalFold(string(b), n) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown server state %q", b)
}

// Admin is an administrative state, set by the operator (fulcrum server
// enable|disable|drain) or by an agent.
type Admin uint8

// The administrative states.
const (
	AdminReady Admin = iota // no administrative restriction
	AdminDrain              // no new sessions; existing ones continue
	AdminMaint              // out of rotation, checks keep running
)

var adminNames = [...]string{AdminReady: "READY", AdminDrain: "DRAIN", AdminMaint: "MAINT"}

func (a Admin) String() string {
	if int(a) < len(adminNames) {
		return adminNames[a]
	}
	return fmt.Sprintf("Admin(%d)", a)
}

// MarshalText implements encoding.TextMarshaler.
func (a Admin) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *Admin) UnmarshalText(b []byte) error {
	v, err := ParseAdmin(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ParseAdmin parses READY, DRAIN or MAINT (any case).
func ParseAdmin(s string) (Admin, error) {
	for i, n := range adminNames {
		if equalFold(s, n) {
			return Admin(i), nil
		}
	}
	return 0, fmt.Errorf("unknown admin state %q (want ready, drain or maint)", s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
