package state

import (
	"strings"
)

// Code classifies the result of applying a command.
type Code string

// The result codes. Every code but CodeOK means the state is unchanged.
const (
	CodeOK Code = "ok"
	// CodeInvalid: the command's content is wrong (a config with faults,
	// an unknown admin state, a weight out of range).
	CodeInvalid Code = "invalid"
	// CodeStale: a conditional write lost a race (--if-version), or a
	// health view is older than the one held.
	CodeStale Code = "stale"
	// CodeNotFound: the command names a version, server or node that does
	// not exist.
	CodeNotFound Code = "not_found"
	// CodeConflict: the command contradicts the state (an import into a
	// cluster that has a config, a node name held by another node ID).
	CodeConflict Code = "conflict"
	// CodeMalformed: the entry's body is not its type's JSON. Every node
	// refuses it alike: the failure depends only on the bytes.
	CodeMalformed Code = "malformed"
	// CodeIgnored: the entry's type is unknown to this version and carries
	// the IgnoreUnknown bit, so it was skipped.
	CodeIgnored Code = "ignored"
)

// Result is what Store.Apply returns for every entry, and what raft hands
// back to the proposer as the future's response. It carries a code and a
// message rather than an error, so that it survives being forwarded as
// JSON.
type Result struct {
	Code    Code   `json:"code"`
	Message string `json:"message,omitempty"`
	// Faults lists every fault of an invalid config by path.
	Faults []FieldError `json:"faults,omitempty"`
	// Version is the current config version after the command (config
	// commands only).
	Version uint64 `json:"version,omitempty"`
	// Index is the log index of the entry.
	Index uint64 `json:"index,omitempty"`
}

// OK reports whether the command was applied (or was a no-op that is not a
// fault, such as an unchanged config).
func (r Result) OK() bool { return r.Code == CodeOK }

// Err returns nil for an OK result and a *CommandError otherwise.
func (r Result) Err() error {
	if r.OK() {
		return nil
	}
	return &CommandError{Code: r.Code, Message: r.Message, Faults: r.Faults}
}

// CommandError is a refused command as an error. errors.As finds it, and
// errors.As finds the Errors of an invalid config through it.
type CommandError struct {
	Code    Code
	Message string
	Faults  []FieldError
}

func (e *CommandError) Error() string {
	if len(e.Faults) == 0 {
		return e.Message
	}
	var b strings.Builder
	b.WriteString(e.Message)
	for _, f := range e.Faults {
		b.WriteString("\n  ")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns the config faults as Errors, or nil.
func (e *CommandError) Unwrap() error {
	if len(e.Faults) == 0 {
		return nil
	}
	return Errors(e.Faults)
}
