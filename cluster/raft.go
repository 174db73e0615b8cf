package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Timers are the Raft timers. The defaults suit a LAN appliance: a dead
// leader is noticed in well under a second.
type Timers struct {
	Heartbeat   time.Duration
	Election    time.Duration
	LeaderLease time.Duration
	Commit      time.Duration
}

// DefaultTimers returns LAN timers (hashicorp/raft's defaults are
// 1s/1s/500ms).
func DefaultTimers() Timers {
	return Timers{
		Heartbeat:   300 * time.Millisecond,
		Election:    300 * time.Millisecond,
		LeaderLease: 150 * time.Millisecond,
		Commit:      20 * time.Millisecond,
	}
}

// fsm adapts the replicated Store to raft.FSM. The Store's Apply is
// deterministic; Snapshot captures an immutable view cheaply and does its
// IO in Persist; Restore builds a fresh view and swaps it in.
type fsm struct{ store *state.Store }

func (f fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.store.Apply(l.Index, l.Data)
}

func (f fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.store.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

func (f fsm) Restore(r io.ReadCloser) error {
	defer r.Close()
	return f.store.Restore(r)
}

type fsmSnapshot struct{ s *state.Snapshot }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.s.Persist(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Release() }

// tlsStream is Raft's stream layer over mutual TLS: only holders of a
// cluster certificate can speak Raft.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func newTLSStream(bind string, advertise net.Addr, server, client *tls.Config) (*tlsStream, error) {
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen %s: %w", bind, err)
	}
	if advertise == nil {
		advertise = l.Addr()
	}
	return &tlsStream{Listener: tls.NewListener(l, server), advertise: advertise, client: client}, nil
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	return d.Dial("tcp", string(addr))
}

// raftNode is this node's Raft: stores on disk under dir, a TLS transport.
type raftNode struct {
	raft      *raft.Raft
	transport *raft.NetworkTransport
	logs      *raftboltdb.BoltStore
	snaps     *raft.FileSnapshotStore
	leaderCh  chan bool
}

// raftStores opens the on-disk stores: raft-boltdb behind a log cache, and
// file snapshots.
func raftStores(dir string, hl hclog.Logger) (*raftboltdb.BoltStore, *raft.LogCache, *raft.FileSnapshotStore, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, nil, fmt.Errorf("raft dir: %w", err)
	}
	logs, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("raft log store: %w", err)
	}
	cache, err := raft.NewLogCache(512, logs)
	if err != nil {
		logs.Close()
		return nil, nil, nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, hl)
	if err != nil {
		logs.Close()
		return nil, nil, nil, fmt.Errorf("raft snapshots: %w", err)
	}
	return logs, cache, snaps, nil
}

// raftOptions describe how to open this node's Raft.
type raftOptions struct {
	Dir       string
	ID        string
	Stream    raft.StreamLayer
	Store     *state.Store
	Timers    Timers
	Log       *slog.Logger
	Bootstrap bool // form a new one-node cluster if there is no state
}

func openRaft(o raftOptions) (*raftNode, error) {
	hl := hclogAdapter(o.Log)
	logs, cache, snaps, err := raftStores(o.Dir, hl)
	if err != nil {
		return nil, err
	}
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(o.ID)
	conf.Logger = hl
	conf.HeartbeatTimeout = o.Timers.Heartbeat
	conf.ElectionTimeout = o.Timers.Election
	conf.LeaderLeaseTimeout = o.Timers.LeaderLease
	conf.CommitTimeout = o.Timers.Commit
	conf.ShutdownOnRemove = false
	conf.SnapshotThreshold = 1024
	// Buffered: raft blocks on an unbuffered NotifyCh (hashicorp/nomad#6977).
	leaderCh := make(chan bool, 16)
	conf.NotifyCh = leaderCh

	trans := newTransport(o.Stream, hl)
	if o.Bootstrap {
		has, err := raft.HasExistingState(cache, logs, snaps)
		if err != nil {
			logs.Close()
			return nil, fmt.Errorf("raft state: %w", err)
		}
		if !has {
			cfg := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: conf.LocalID, Address: trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(conf, cache, logs, snaps, trans, cfg); err != nil {
				logs.Close()
				return nil, fmt.Errorf("raft bootstrap: %w", err)
			}
		}
	}
	r, err := raft.NewRaft(conf, fsm{o.Store}, cache, logs, snaps, trans)
	if err != nil {
		logs.Close()
		trans.Close()
		return nil, fmt.Errorf("raft: %w", err)
	}
	return &raftNode{raft: r, transport: trans, logs: logs, snaps: snaps, leaderCh: leaderCh}, nil
}

// newTransport is Raft's network transport over stream, without pipelined
// replication (MaxRPCsInFlight 1: each AppendEntries waits for its
// answer). With raft v1.7.3's default of 2 the pipeline's channels are
// unbuffered, and when a follower answers with a newer term (a leadership
// transfer) or a refusal, the replication goroutine can block for good on
// its next send: that follower gets no more entries while heartbeats go on,
// and Shutdown waits forever (an agent hung at SIGTERM here; diagnosed the
// same way in grafana/pyroscope#5518). Pipelining buys nothing at a config
// store's write rate.
func newTransport(stream raft.StreamLayer, log hclog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 5 * time.Second, Logger: log, MaxRPCsInFlight: 1,
	})
}

// close shuts Raft down and closes its stores.
func (n *raftNode) close() error {
	err := n.raft.Shutdown().Error()
	n.transport.Close()
	return errors.Join(err, n.logs.Close())
}

// hclogAdapter routes Raft's hclog output into slog, one record a line.
func hclogAdapter(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            "raft",
		Level:           hclog.Info,
		Output:          slogWriter{log.With("component", "raft")},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

// slogWriter turns the line-per-record output of Raft's hclog and of
// memberlist's log.Logger into slog records, at the level the line's
// "[LEVEL]" prefix names (memberlist's [DEBUG] lines are debug records).
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\r\n")
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(msg, "["); ok {
		if name, text, ok := strings.Cut(rest, "]"); ok {
			switch name {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			msg = strings.TrimSpace(text)
		}
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}
