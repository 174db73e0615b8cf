package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// CommandType is the first byte of every replicated log entry. The rest of
// the entry is the JSON body of the command struct that the type names.
//
// The wire format is versioned by the type byte alone: a type, once
// released, keeps its number and its body stays backward compatible (new
// fields are optional; old fields keep their meaning). A new command that
// older nodes may safely skip is given a type with IgnoreUnknown set; one
// that changes state every node must see is given a type without it, and an
// older node that meets it stops rather than diverge (see Store.Apply).
type CommandType uint8

// IgnoreUnknown is the reserved high bit of a CommandType: a node that does
// not know the type skips the entry instead of stopping.
const IgnoreUnknown CommandType = 0x80

// The command types. The numbers are part of the wire format: never reuse
// or renumber one.
const (
	TypeApplyConfig     CommandType = 1
	TypeRollbackConfig  CommandType = 2
	TypeSetServerAdmin  CommandType = 3
	TypeSetServerWeight CommandType = 4
	TypeHealthView      CommandType = 5
	TypeSetVerdicts     CommandType = 6
	TypeNodeUpsert      CommandType = 7
	TypeNodeRemove      CommandType = 8
	TypeRevokeCert      CommandType = 9
	// TypeNoop changes nothing. It carries the IgnoreUnknown bit, so it is
	// also the proof that a flagged type known to this version is applied
	// like any other.
	TypeNoop CommandType = IgnoreUnknown | 1
)

// Known reports whether this version of the code can apply the type.
func (t CommandType) Known() bool { return newBody(t) != nil }

// Ignorable reports whether the type carries the IgnoreUnknown bit.
func (t CommandType) Ignorable() bool { return t&IgnoreUnknown != 0 }

func (t CommandType) String() string {
	switch t {
	case TypeApplyConfig:
		return "ApplyConfig"
	case TypeRollbackConfig:
		return "RollbackConfig"
	case TypeSetServerAdmin:
		return "SetServerAdmin"
	case TypeSetServerWeight:
		return "SetServerWeight"
	case TypeHealthView:
		return "HealthView"
	case TypeSetVerdicts:
		return "SetVerdicts"
	case TypeNodeUpsert:
		return "NodeUpsert"
	case TypeNodeRemove:
		return "NodeRemove"
	case TypeRevokeCert:
		return "RevokeCert"
	case TypeNoop:
		return "Noop"
	}
	return fmt.Sprintf("CommandType(0x%02x)", uint8(t))
}

// Command is implemented by every command body.
type Command interface {
	// Type is the command's type byte.
	Type() CommandType
}

// ApplyConfig commits a new config version: the proxy config document as
// the operator wrote it. The store parses and validates it again; an
// invalid document is refused with every fault by path.
type ApplyConfig struct {
	YAML string `json:"yaml"`
	// Origin says who asked: a user, or a node name.
	Origin string `json:"origin,omitempty"`
	// Time is set by the proposer and recorded as the version's time. Apply
	// never reads the clock.
	Time time.Time `json:"time"`
	// IfVersion, when not 0, refuses the write unless the current version
	// is exactly IfVersion (`config apply --if-version N`).
	IfVersion uint64 `json:"if_version,omitempty"`
	// Import marks the document a standalone node brought along when it
	// created the cluster (`cluster init`). It is refused once any version
	// exists.
	Import bool `json:"import,omitempty"`
}

// RollbackConfig commits a new version whose document is that of version
// To. History is never rewritten: the rollback is itself a version.
type RollbackConfig struct {
	To        uint64    `json:"to"`
	Origin    string    `json:"origin,omitempty"`
	Time      time.Time `json:"time"`
	IfVersion uint64    `json:"if_version,omitempty"`
}

// Admin is the operator's runtime state of a server, HAProxy's
// `set server ... state`.
type Admin string

// The admin states.
const (
	// AdminReady is a server in normal service (the default).
	AdminReady Admin = "ready"
	// AdminDrain takes no new sessions except persistent ones; existing
	// sessions finish.
	AdminDrain Admin = "drain"
	// AdminMaint takes no traffic at all.
	AdminMaint Admin = "maint"
)

// SetServerAdmin sets a server's admin state.
type SetServerAdmin struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Admin   Admin  `json:"admin"`
}

// SetServerWeight overrides a server's configured weight; a nil Weight
// removes the override.
type SetServerWeight struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Weight  *int   `json:"weight"`
}

// HealthView is one node's health observations, keyed by ServerKey
// ("backend/server"), true for UP. A Full view replaces the node's previous
// view (sent when the node joins, rejoins or sees quorum return); otherwise
// the listed servers are merged into it (transitions).
//
// Seq orders a node's views: one whose Seq is not above the last one
// applied for the node is refused as stale, so a retried or reordered
// report cannot undo a newer one. A node continues from the Seq the store
// holds for it (Store.Views), so a restart does not reset it.
type HealthView struct {
	Node    string          `json:"node"`
	Seq     uint64          `json:"seq"`
	Full    bool            `json:"full,omitempty"`
	Servers map[string]bool `json:"servers"`
}

// SetVerdicts commits health verdicts computed by the leader (see
// ComputeVerdicts), keyed by ServerKey, true for UP. Listed servers are set;
// others keep their verdict. Term and LiveVoters record the basis of the
// decision, for status.
type SetVerdicts struct {
	Verdicts   map[string]bool `json:"verdicts"`
	Term       uint64          `json:"term,omitempty"`
	LiveVoters []string        `json:"live_voters,omitempty"`
	Policy     VerdictPolicy   `json:"policy,omitempty"`
}

// Role is a node's part in the cluster.
type Role string

// The roles.
const (
	// RoleVoter votes in Raft and runs the proxy.
	RoleVoter Role = "voter"
	// RoleWitness votes in Raft and gossips, but runs no proxy and holds no
	// VIP.
	RoleWitness Role = "witness"
)

// NodeUpsert records a node's facts, adding the node or updating it.
type NodeUpsert struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	APIAddr    string `json:"api_addr,omitempty"`
	GossipAddr string `json:"gossip_addr,omitempty"`
	Role       Role   `json:"role"`
	Version    string `json:"version,omitempty"`
	// Serial is the node certificate's serial, revoked when it is removed.
	Serial string `json:"serial,omitempty"`
}

// NodeRemove forgets a node and its health view.
type NodeRemove struct {
	Name string `json:"name"`
}

// RevokeCert adds a certificate serial to the deny list that every
// handshake checks. Node names whose certificate it was, for status.
type RevokeCert struct {
	Serial string `json:"serial"`
	Node   string `json:"node,omitempty"`
}

// Noop changes nothing; Note is for whoever reads the log.
type Noop struct {
	Note string `json:"note,omitempty"`
}

// Type implements Command.
func (ApplyConfig) Type() CommandType { return TypeApplyConfig }

// Type implements Command.
func (RollbackConfig) Type() CommandType { return TypeRollbackConfig }

// Type implements Command.
func (SetServerAdmin) Type() CommandType { return TypeSetServerAdmin }

// Type implements Command.
func (SetServerWeight) Type() CommandType { return TypeSetServerWeight }

// Type implements Command.
func (HealthView) Type() CommandType { return TypeHealthView }

// Type implements Command.
func (SetVerdicts) Type() CommandType { return TypeSetVerdicts }

// Type implements Command.
func (NodeUpsert) Type() CommandType { return TypeNodeUpsert }

// Type implements Command.
func (NodeRemove) Type() CommandType { return TypeNodeRemove }

// Type implements Command.
func (RevokeCert) Type() CommandType { return TypeRevokeCert }

// Type implements Command.
func (Noop) Type() CommandType { return TypeNoop }

// newBody returns a pointer to a zero body for a known type, or nil.
func newBody(t CommandType) Command {
	switch t {
	case TypeApplyConfig:
		return &ApplyConfig{}
	case TypeRollbackConfig:
		return &RollbackConfig{}
	case TypeSetServerAdmin:
		return &SetServerAdmin{}
	case TypeSetServerWeight:
		return &SetServerWeight{}
	case TypeHealthView:
		return &HealthView{}
	case TypeSetVerdicts:
		return &SetVerdicts{}
	case TypeNodeUpsert:
		return &NodeUpsert{}
	case TypeNodeRemove:
		return &NodeRemove{}
	case TypeRevokeCert:
		return &RevokeCert{}
	case TypeNoop:
		return &Noop{}
	}
	return nil
}

// EncodeCommand returns the log entry for a command: the type byte, then the
// body as JSON. For a known type the body must be that type's struct (or a
// pointer to it); any body is accepted for an unknown type, so that tests
// and newer code can build entries this version does not know.
func EncodeCommand(t CommandType, body any) ([]byte, error) {
	if t.Known() {
		c, ok := body.(Command)
		if !ok || c.Type() != t {
			return nil, fmt.Errorf("encode %v: body is a %T", t, body)
		}
	}
	js, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %v: %w", t, err)
	}
	return append([]byte{byte(t)}, js...), nil
}

// Encode returns the log entry for c.
func Encode(c Command) ([]byte, error) { return EncodeCommand(c.Type(), c) }

// ErrUnknownCommand is wrapped by the error DecodeCommand returns for a type
// this version does not know.
var ErrUnknownCommand = errors.New("unknown command type")

// DecodeCommand splits a log entry into its type and its body, a pointer to
// the type's struct (*ApplyConfig, ...). It never panics. An unknown type
// yields an error wrapping ErrUnknownCommand; an empty entry or a body that
// is not the type's JSON yields another error.
func DecodeCommand(data []byte) (CommandType, Command, error) {
	if len(data) == 0 {
		return 0, nil, errors.New("empty command")
	}
	t := CommandType(data[0])
	body := newBody(t)
	if body == nil {
		return t, nil, fmt.Errorf("%w 0x%02x", ErrUnknownCommand, uint8(t))
	}
	if err := json.Unmarshal(data[1:], body); err != nil {
		return t, nil, fmt.Errorf("decode %v: %w", t, err)
	}
	return t, body, nil
}
