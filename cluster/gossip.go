package cluster

import (
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipTimers are memberlist's failure-detection timers. The defaults
// detect a dead peer in about a second on a LAN (lab-findings.md: probe
// 200 ms, timeout 100 ms, suspicion multiplier 3 measured 0.84–1.21 s).
type GossipTimers struct {
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
}

// DefaultGossipTimers returns the LAN appliance timers.
func DefaultGossipTimers() GossipTimers {
	return GossipTimers{
		ProbeInterval:  200 * time.Millisecond,
		ProbeTimeout:   100 * time.Millisecond,
		SuspicionMult:  3,
		GossipInterval: 100 * time.Millisecond,
	}
}

// NodeMeta is what a node tells its peers through gossip.
type NodeMeta struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft"`
	APIAddr  string `json:"api"`
	Version  string `json:"version"`
	Role     string `json:"role"`
	// Applied is the config version this node's data plane runs.
	Applied uint64 `json:"applied"`
	// ApplyError says why the node could not run a committed version.
	ApplyError string `json:"apply_error,omitempty"`
	// HoldsVIP: this node holds the active-passive VIP.
	HoldsVIP bool `json:"holds_vip,omitempty"`
	// VIPSince is when this node began to hold the VIP, and Announced
	// when it last announced it (a GARP burst, a BGP advertisement), in
	// unix milliseconds; 0 while it holds nothing.
	VIPSince  int64 `json:"vip_since,omitempty"`
	Announced int64 `json:"announced,omitempty"`
	// Schema is the config schema level this node's build understands
	// (absent: 1, a build from before levels were published).
	Schema int `json:"schema,omitempty"`
	// VIPPriority is the node config's vip.priority: among fit nodes the
	// highest priority is the preferred active-passive VIP owner.
	VIPPriority int `json:"vip_priority,omitempty"`
	// Fit: this node's proxy can take the VIP (VIP control runs, the
	// committed config is in service, not draining). Absent (a build from
	// before it was published, or a witness): never a hand-over target.
	Fit bool `json:"fit,omitempty"`
	// HealthySince is when the node last became fit, in unix nanoseconds
	// (0 while unfit).
	HealthySince int64 `json:"healthy_since,omitempty"`
}

// Member is a gossip peer as this node sees it.
type Member struct {
	Name  string
	Addr  string
	State string // alive | suspect | dead | left
	Meta  NodeMeta
}

// gossip runs memberlist. Its delegates never block: they copy what they
// need and wake the owner through a coalescing channel.
type gossip struct {
	ml    *memberlist.Memberlist
	mu    sync.Mutex
	meta  []byte
	table map[string]Member // copied in the event delegates
	moved bool              // see takeMembershipMoved
	wake  chan struct{}
}

type gossipOptions struct {
	Name      string
	Bind      string // host:port
	Advertise string // host:port; empty: Bind
	Key       []byte // 32-byte AES key
	Timers    GossipTimers
	Meta      NodeMeta
	Log       *slog.Logger
}

func startGossip(o gossipOptions) (*gossip, error) {
	g := &gossip{wake: make(chan struct{}, 1), table: map[string]Member{}}
	if err := g.setMeta(o.Meta); err != nil {
		return nil, err
	}
	conf := memberlist.DefaultLANConfig()
	conf.Name = o.Name
	host, port, err := splitHostPort(o.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind: %w", err)
	}
	conf.BindAddr, conf.BindPort = host, port
	conf.AdvertiseAddr, conf.AdvertisePort = host, port
	if o.Advertise != "" {
		if conf.AdvertiseAddr, conf.AdvertisePort, err = splitHostPort(o.Advertise); err != nil {
			return nil, fmt.Errorf("gossip advertise: %w", err)
		}
	}
	conf.SecretKey = o.Key
	conf.ProbeInterval = o.Timers.ProbeInterval
	conf.ProbeTimeout = o.Timers.ProbeTimeout
	conf.SuspicionMult = o.Timers.SuspicionMult
	conf.GossipInterval = o.Timers.GossipInterval
	// A LAN: a peer that does not take a TCP connection within a second
	// is down; joins and push/pulls must not hang on it.
	conf.TCPTimeout = time.Second
	conf.Delegate = g
	conf.Events = g
	conf.Logger = log.New(slogWriter{o.Log.With("component", "gossip")}, "", 0)
	ml, err := memberlist.Create(conf)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	return g, nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	return h, n, err
}

func (g *gossip) setMeta(m NodeMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.meta = b
	g.mu.Unlock()
	return nil
}

// updateMeta publishes new metadata to the peers.
func (g *gossip) updateMeta(m NodeMeta) error {
	if err := g.setMeta(m); err != nil {
		return err
	}
	return g.ml.UpdateNode(time.Second)
}

func (g *gossip) join(peers []string) error {
	if len(peers) == 0 {
		return nil
	}
	_, err := g.ml.Join(peers)
	return err
}

// leave announces a graceful departure, then stops.
func (g *gossip) leave(timeout time.Duration) error {
	err := g.ml.Leave(timeout)
	if serr := g.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// members lists every peer gossip has seen, with its state. The table is
// filled by the event delegates: memberlist's own *Node values change
// under its lock and must not be read outside it.
func (g *gossip) members() []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.table))
	for _, m := range g.table {
		out = append(out, m)
	}
	return out
}

// record copies a node's facts; called from the delegates.
func (g *gossip) record(n *memberlist.Node, state string) {
	m := Member{Name: n.Name, Addr: n.Address(), State: state}
	json.Unmarshal(n.Meta, &m.Meta)
	g.mu.Lock()
	if old, ok := g.table[n.Name]; !ok || old.State != state {
		g.moved = true
	}
	g.table[n.Name] = m
	g.mu.Unlock()
	g.poke()
}

// takeMembershipMoved reports whether a node appeared or changed state
// (alive, dead, left) since the last call, as opposed to metadata updates.
func (g *gossip) takeMembershipMoved() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	moved := g.moved
	g.moved = false
	return moved
}

func (g *gossip) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.meta) > limit {
		return nil
	}
	return append([]byte(nil), g.meta...)
}

// NotifyMsg implements memberlist.Delegate; Fulcrum sends no user messages.
func (g *gossip) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (g *gossip) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (g *gossip) MergeRemoteState(buf []byte, join bool) {}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(n *memberlist.Node) { g.record(n, "alive") }

// NotifyLeave implements memberlist.EventDelegate: a node that left
// gracefully, or was declared dead.
func (g *gossip) NotifyLeave(n *memberlist.Node) {
	st := "dead"
	if n.State == memberlist.StateLeft {
		st = "left"
	}
	g.record(n, st)
}

// NotifyUpdate implements memberlist.EventDelegate (metadata changed).
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.record(n, "alive") }
