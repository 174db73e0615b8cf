package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/state"
)

// joinRequest is what a joiner sends on first contact, over TLS pinned to
// the cluster CA named in its token.
type joinRequest struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	APIAddr    string `json:"api_addr"`
	GossipAddr string `json:"gossip_addr"`
	Role       string `json:"role"`
	Version    string `json:"version"`
	// Proof is HMAC(secret, name, nonce) with the nonce exported from this
	// TLS session: it proves the secret without revealing it.
	Proof []byte `json:"proof"`
}

// joinResponse hands the joiner its identity.
type joinResponse struct {
	Cluster string   `json:"cluster"`
	CACert  []byte   `json:"ca_cert"`
	CAKey   []byte   `json:"ca_key"`
	Cert    []byte   `json:"cert"`
	Key     []byte   `json:"key"`
	Seeds   []string `json:"seeds"`
}

// newNode builds a Node value for a record and bundle (not started).
func newNode(cfg NodeConfig, log *slog.Logger, version string, rec record, b *tlsBundle, store *state.Store) *Node {
	return &Node{cfg: cfg, log: log, version: version, rec: rec, tls: b, store: store, metaDirty: make(chan struct{}, 1)}
}

// initCluster makes this node the first member of a new cluster: a secret,
// a CA, its node certificate, a one-voter Raft. It returns the join token.
func initCluster(ctx context.Context, cfg NodeConfig, log *slog.Logger, version string, store *state.Store, o nodeOptions) (*Node, string, error) {
	dd := cfg.Node.DataDir
	if _, ok, err := loadRecord(dd); err != nil || ok {
		if err != nil {
			return nil, "", err
		}
		return nil, "", errors.New("this node is already in a cluster")
	}
	id, err := nodeID(dd)
	if err != nil {
		return nil, "", err
	}
	rec := record{Cluster: "fulcrum", NodeID: id, Name: cfg.Node.Name, Role: cfg.Node.Role,
		Secret: pki.NewSecret(), Seeds: []string{cfg.Cluster.GossipAddr()}, JoinedAt: time.Now().UTC()}
	ca, err := pki.NewCA(rec.Cluster, time.Now())
	if err != nil {
		return nil, "", err
	}
	b, err := issueSelf(dd, ca, cfg)
	if err != nil {
		return nil, "", err
	}
	n := newNode(cfg, log, version, rec, b, store)
	if err := n.start(true, o); err != nil {
		os.RemoveAll(clusterDir(dd))
		return nil, "", err
	}
	if err := n.waitLeader(ctx, 10*time.Second); err != nil {
		n.close()
		os.RemoveAll(clusterDir(dd))
		return nil, "", err
	}
	if err := saveRecord(dd, rec); err != nil {
		n.close()
		os.RemoveAll(clusterDir(dd))
		return nil, "", err
	}
	if _, err := n.propose(ctx, n.upsertSelf()); err != nil {
		return n, "", fmt.Errorf("register this node: %w", err)
	}
	return n, pki.NewToken(rec.Secret, ca.Fingerprint()), nil
}

// issueSelf saves the CA and a node certificate for this node.
func issueSelf(dataDir string, ca *pki.CA, cfg NodeConfig) (*tlsBundle, error) {
	dir := tlsDir(dataDir)
	if err := ca.Save(dir); err != nil {
		return nil, err
	}
	certPEM, keyPEM, _, err := ca.IssueNode(cfg.Node.Name, []net.IP{net.ParseIP(cfg.Cluster.BindAddr)}, nil, time.Now())
	if err != nil {
		return nil, err
	}
	if err := saveNodeCert(dir, certPEM, keyPEM); err != nil {
		return nil, err
	}
	return loadBundle(dir)
}

func (n *Node) upsertSelf() *state.NodeUpsert {
	c := n.cfg.Cluster
	up := &state.NodeUpsert{Name: n.rec.Name, ID: n.rec.NodeID, RaftAddr: c.RaftAddr(), APIAddr: c.APIAddr(),
		GossipAddr: c.GossipAddr(), Role: state.Role(n.rec.Role), Version: n.version}
	if leaf, err := x509.ParseCertificate(n.tls.cert.Certificate[0]); err == nil {
		up.Serial = pki.Serial(leaf)
	}
	return up
}

// waitLeader waits until some node (maybe this one) leads.
func (n *Node) waitLeader(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, id := n.raft.raft.LeaderWithID(); id != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no leader elected within %v", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// joinCluster contacts a member at seed (host[:api_port]) with a token,
// receives this node's identity and starts as a member.
func joinCluster(ctx context.Context, cfg NodeConfig, log *slog.Logger, version, seed, token string, store *state.Store, o nodeOptions) (*Node, error) {
	dd := cfg.Node.DataDir
	if _, ok, err := loadRecord(dd); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("this node is already in a cluster")
	}
	tok, err := pki.ParseToken(token)
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(seed); err != nil {
		seed = net.JoinHostPort(seed, strconv.Itoa(DefaultAPIPort))
	}
	id, err := nodeID(dd)
	if err != nil {
		return nil, err
	}
	c := cfg.Cluster
	req := joinRequest{Name: cfg.Node.Name, ID: id, RaftAddr: c.RaftAddr(), APIAddr: c.APIAddr(),
		GossipAddr: c.GossipAddr(), Role: cfg.Node.Role, Version: version}
	resp, err := sendJoin(ctx, seed, tok, req)
	if err != nil {
		return nil, fmt.Errorf("join through %s: %w", seed, err)
	}
	dir := tlsDir(dd)
	if err := writeCA(dir, resp.CACert, resp.CAKey); err != nil {
		return nil, err
	}
	if err := saveNodeCert(dir, resp.Cert, resp.Key); err != nil {
		return nil, err
	}
	b, err := loadBundle(dir)
	if err != nil {
		return nil, err
	}
	rec := record{Cluster: resp.Cluster, NodeID: id, Name: cfg.Node.Name, Role: cfg.Node.Role,
		Secret: tok.Secret, Seeds: resp.Seeds, JoinedAt: time.Now().UTC()}
	if err := saveRecord(dd, rec); err != nil {
		return nil, err
	}
	n := newNode(cfg, log, version, rec, b, store)
	if err := n.start(false, o); err != nil {
		return nil, err
	}
	return n, nil
}

func writeCA(dir string, certPEM, keyPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), certPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, pki.CAKeyFile), keyPEM, 0o600)
}

// sendJoin does the first contact: TLS pinned to the token's CA, then the
// proof bound to this very session.
func sendJoin(ctx context.Context, seed string, tok pki.Token, req joinRequest) (*joinResponse, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: pki.PinnedClientTLS(tok.CAFingerprint)}
	conn, err := d.DialContext(ctx, "tcp", seed)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tc := conn.(*tls.Conn)
	cs := tc.ConnectionState()
	nonce, err := pki.ExportJoinNonce(&cs)
	if err != nil {
		return nil, err
	}
	req.Proof = pki.JoinProof(tok.Secret, req.Name, nonce)
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+seed+"/v1/cluster/join", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := hreq.Write(conn); err != nil {
		return nil, err
	}
	hresp, err := http.ReadResponse(bufio.NewReader(conn), hreq)
	if err != nil {
		return nil, err
	}
	defer hresp.Body.Close()
	var out joinResponse
	if err := decodeAPIResponse(hresp, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// handleJoin admits a node that proves it knows the cluster secret.
func (a *nodeAPI) handleJoin(w http.ResponseWriter, r *http.Request) {
	n := a.n
	var req joinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: err.Error()})
		return
	}
	nonce, err := pki.ExportJoinNonce(r.TLS)
	if err != nil || !pki.VerifyJoinProof(n.rec.Secret, req.Name, nonce, req.Proof) {
		n.log.Warn("join refused: bad proof", "name", req.Name, "from", r.RemoteAddr)
		writeAPIError(w, &APIError{Status: http.StatusForbidden, Code: "bad_token", Message: "the join token is not this cluster's"})
		return
	}
	if !validNodeName(req.Name) || req.ID == "" {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "invalid node name or id"})
		return
	}
	if other, ok := n.store.View().Node(req.Name); ok && other.ID != req.ID {
		writeAPIError(w, &APIError{Status: http.StatusConflict, Code: "name_taken",
			Message: fmt.Sprintf("node name %q is taken by another node; remove it first or pick another name", req.Name)})
		return
	}
	host, _, err := net.SplitHostPort(req.RaftAddr)
	if err != nil {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: "invalid raft_addr"})
		return
	}
	certPEM, keyPEM, serial, err := n.tls.ca.IssueNode(req.Name, []net.IP{net.ParseIP(host)}, nil, time.Now())
	if err != nil {
		writeAPIError(w, &APIError{Status: 500, Code: CodeInternal, Message: err.Error()})
		return
	}
	ctx := r.Context()
	up := &state.NodeUpsert{Name: req.Name, ID: req.ID, RaftAddr: req.RaftAddr, APIAddr: req.APIAddr,
		GossipAddr: req.GossipAddr, Role: state.Role(req.Role), Version: req.Version, Serial: serial}
	if _, err := n.propose(ctx, up); err != nil {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()})
		return
	}
	if err := n.addVoter(req.ID, req.RaftAddr); err != nil {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()})
		return
	}
	seeds := []string{}
	for _, nd := range n.store.Nodes() {
		if nd.GossipAddr != "" && nd.Name != req.Name {
			seeds = append(seeds, nd.GossipAddr)
		}
	}
	n.log.Info("node joined", "name", req.Name, "raft", req.RaftAddr)
	writeAPIJSON(w, http.StatusOK, joinResponse{Cluster: n.rec.Cluster, CACert: n.tls.ca.CertPEM(),
		CAKey: n.tls.ca.KeyPEM(), Cert: certPEM, Key: keyPEM, Seeds: seeds})
}

// openExisting starts a node that is already a member (after a restart).
func openExisting(cfg NodeConfig, log *slog.Logger, version string, rec record, store *state.Store, o nodeOptions) (*Node, error) {
	b, err := loadBundle(tlsDir(cfg.Node.DataDir))
	if err != nil {
		return nil, fmt.Errorf("cluster identity: %w", err)
	}
	n := newNode(cfg, log, version, rec, b, store)
	if err := n.start(false, o); err != nil {
		return nil, err
	}
	return n, nil
}

// leave takes this node out of the cluster for good: the leader hands
// over first, then the node is removed from Raft, leaves gossip and
// forgets its cluster state.
func (n *Node) leave(ctx context.Context) error {
	if n.isLeader() && n.voters() > 1 {
		if err := n.raft.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("hand leadership over: %w", err)
		}
		n.waitLeader(ctx, 5*time.Second)
	}
	if n.voters() > 1 {
		if _, err := n.propose(ctx, &state.NodeRemove{Name: n.rec.Name}); err != nil {
			return err
		}
		addr, err := n.leaderAPI()
		if err != nil {
			return n.noQuorum(err)
		}
		body, _ := json.Marshal(removeRequest{ID: n.rec.NodeID})
		if err := n.api.call(ctx, addr, "/v1/internal/remove", body, nil); err != nil {
			return fmt.Errorf("remove from raft: %w", err)
		}
	}
	err := n.close()
	if rerr := os.RemoveAll(clusterDir(n.cfg.Node.DataDir)); rerr != nil {
		err = errors.Join(err, rerr)
	}
	return err
}

// raftState names this node's Raft role for status.
func raftState(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "none"
}
