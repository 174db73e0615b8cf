package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/state"
)

// SaveSnapshot writes the replicated state (every config version, server
// state, nodes, verdicts, revocations) to w.
func (a *Agent) SaveSnapshot(w io.Writer) error {
	m := a.member.Load()
	if m == nil {
		return ErrStandalone
	}
	s, err := m.store.Snapshot()
	if err != nil {
		return err
	}
	defer s.Release()
	return s.Persist(w)
}

// RestoreSnapshot makes the cluster take on a saved state: the leader
// installs it and replicates it to the others. For disaster recovery.
func (a *Agent) RestoreSnapshot(r io.Reader) error {
	m := a.member.Load()
	if m == nil {
		return ErrStandalone
	}
	if !m.node.isLeader() {
		return errors.New("run snapshot restore on the leader (see `fulcrum cluster status`)")
	}
	data, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return err
	}
	// Check it before Raft takes it: a store must restore from it.
	if err := state.NewStore().Restore(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("not a Fulcrum snapshot: %w", err)
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(data))}
	return m.node.raft.raft.Restore(meta, bytes.NewReader(data), time.Minute)
}

// Recover rebuilds a working cluster from this node after a permanent loss
// of quorum: Raft restarts with this node as the only voter, keeping every
// committed (and possibly some uncommitted) entry. The other nodes must be
// wiped and joined again. Only with force.
func (a *Agent) Recover(ctx context.Context, force bool) error {
	if !force {
		return errors.New("recover rewrites the Raft membership to this node alone and may commit entries that were never committed: pass --force if the other voters are gone for good")
	}
	a.opMu.Lock()
	defer a.opMu.Unlock()
	m := a.member.Load()
	if m == nil {
		return ErrStandalone
	}
	if m.node.hasLeader() && m.node.voters() > 1 {
		return errors.New("the cluster has a leader: recover is only for a lost quorum")
	}
	a.log.Warn("RECOVERING THE CLUSTER FROM THIS NODE ALONE: the other voters are dropped from the Raft membership")
	if err := a.detach(); err != nil {
		a.log.Warn("stop before recovery", "err", err)
	}
	rec := m.node.rec
	if err := recoverRaft(a.cfg, rec, a.log); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	store := state.NewStore()
	n, err := openExisting(a.cfg, a.log.With("component", "cluster"), a.version, rec, store, a.nodeOpts)
	if err != nil {
		return fmt.Errorf("restart after recovery: %w", err)
	}
	a.attach(n, store)
	return n.waitLeader(ctx, 10*time.Second)
}

// recoverRaft forces a one-voter configuration into the on-disk Raft state.
func recoverRaft(cfg NodeConfig, rec record, log *slog.Logger) error {
	hl := hclogAdapter(log)
	logs, cache, snaps, err := raftStores(raftDir(cfg.Node.DataDir), hl)
	if err != nil {
		return err
	}
	defer logs.Close()
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(rec.NodeID)
	conf.Logger = hl
	// A transport that is never used to talk: RecoverCluster only needs its
	// address type.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.Cluster.RaftAddr()))
	servers := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: conf.LocalID, Address: raft.ServerAddress(cfg.Cluster.RaftAddr()),
	}}}
	return raft.RecoverCluster(conf, fsm{state.NewStore()}, cache, logs, snaps, trans, servers)
}

// IssueCert makes a client certificate for an operator's remote CLI.
type IssuedCert struct {
	CertPEM string `json:"cert"`
	KeyPEM  string `json:"key"`
	CAPEM   string `json:"ca"`
	Serial  string `json:"serial"`
	// API is where a remote CLI reaches this node.
	API string `json:"api"`
}

// IssueCert issues an operator client certificate signed by the cluster CA.
func (a *Agent) IssueCert(name string) (IssuedCert, error) {
	m := a.member.Load()
	if m == nil {
		return IssuedCert{}, ErrStandalone
	}
	if !validNodeName(name) {
		return IssuedCert{}, fmt.Errorf("invalid name %q (letters, digits, '-', '_', '.')", name)
	}
	c, k, serial, err := m.node.tls.ca.IssueClient(name, time.Now())
	if err != nil {
		return IssuedCert{}, err
	}
	return IssuedCert{CertPEM: string(c), KeyPEM: string(k), CAPEM: string(m.node.tls.ca.CertPEM()), Serial: serial,
		API: net.JoinHostPort(a.cfg.Cluster.BindAddr, fmt.Sprint(a.cfg.Cluster.APIPort))}, nil
}

// operatorOnly admits remote CLIs presenting an operator certificate of
// the cluster (from `fulcrum cluster issue-cert`).
func operatorOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := pki.PeerIdentity(r.TLS)
		if !ok || id.Role != pki.RoleOperator {
			writeAPIError(w, &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: "an operator certificate of this cluster is required (fulcrum cluster issue-cert)"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// routesRecovery adds snapshot, recovery and certificate endpoints.
func (s *adminServer) routesRecovery(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cluster/snapshot", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := s.agent.SaveSnapshot(&buf); err != nil {
			s.writeError(w, clusterError(err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("POST /v1/cluster/snapshot", func(w http.ResponseWriter, r *http.Request) {
		if err := s.agent.RestoreSnapshot(http.MaxBytesReader(w, r.Body, 256<<20)); err != nil {
			s.writeError(w, clusterError(err))
			return
		}
		s.writeJSON(w, http.StatusOK, OK{OK: true})
	})
	mux.HandleFunc("POST /v1/cluster/recover", func(w http.ResponseWriter, r *http.Request) {
		force := r.URL.Query().Get("force") == "true"
		if err := s.agent.Recover(r.Context(), force); err != nil {
			s.writeError(w, clusterError(err))
			return
		}
		s.writeJSON(w, http.StatusOK, OK{OK: true})
	})
	mux.HandleFunc("POST /v1/cluster/issue-cert", func(w http.ResponseWriter, r *http.Request) {
		var req NodeRequest
		if !s.decode(w, r, &req) {
			return
		}
		c, err := s.agent.IssueCert(req.Node)
		s.reply(w, c, err)
	})
}
