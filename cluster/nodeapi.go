package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/state"
)

// nodeAPI is the API between nodes on cluster.api_port, over TLS with the
// cluster CA: joins (authenticated by the join token's proof) and, for
// holders of a node certificate, forwarded writes and membership changes.
type nodeAPI struct {
	n      *Node
	ln     net.Listener
	srv    *http.Server
	client *http.Client
	done   chan error
}

func startNodeAPI(n *Node) (*nodeAPI, error) {
	ln, err := net.Listen("tcp", n.cfg.Cluster.APIAddr())
	if err != nil {
		return nil, fmt.Errorf("node API listen %s: %w", n.cfg.Cluster.APIAddr(), err)
	}
	a := &nodeAPI{n: n, ln: tls.NewListener(ln, pki.APIServerTLS(n.tls.pool, n.tls.cert, n.revoked)), done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cluster/join", a.handleJoin)
	mux.HandleFunc("POST /v1/internal/apply", a.nodesOnly(a.handleApply))
	mux.HandleFunc("POST /v1/internal/addvoter", a.nodesOnly(a.handleAddVoter))
	mux.HandleFunc("POST /v1/internal/remove", a.nodesOnly(a.handleRemove))
	if n.opts.Admin != nil {
		mux.Handle("/v1/", n.opts.Admin)
	}
	a.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   pki.ClientTLS(n.tls.pool, n.tls.cert, "", n.revoked),
		ForceAttemptHTTP2: false, MaxIdleConnsPerHost: 2,
	}}
	go func() { a.done <- a.srv.Serve(a.ln) }()
	return a, nil
}

func (a *nodeAPI) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := a.srv.Shutdown(ctx)
	<-a.done
	a.client.CloseIdleConnections()
	return err
}

// nodesOnly admits only peers presenting a node certificate of the cluster.
func (a *nodeAPI) nodesOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := pki.PeerIdentity(r.TLS)
		if !ok || id.Role != pki.RoleNode {
			writeAPIError(w, &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: "a cluster node certificate is required"})
			return
		}
		h(w, r)
	}
}

// call POSTs body to a peer's node API and decodes the JSON answer into out.
func (a *nodeAPI) call(ctx context.Context, addr, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeAPIResponse(resp, out)
}

func decodeAPIResponse(resp *http.Response, out any) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
			eb.Error.Status = resp.StatusCode
			return eb.Error
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func writeAPIError(w http.ResponseWriter, e *APIError) {
	writeAPIJSON(w, e.Status, errorBody{Error: e})
}

func writeAPIJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// handleApply commits a forwarded command; only the leader does.
func (a *nodeAPI) handleApply(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: err.Error()})
		return
	}
	if !a.n.isLeader() {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", Message: "this node is not the leader"})
		return
	}
	res, err := a.n.applyLocal(data, 5*time.Second)
	var ce *state.CommandError
	if err != nil && !errors.As(err, &ce) {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()})
		return
	}
	writeAPIJSON(w, http.StatusOK, res)
}

type addVoterRequest struct {
	ID, RaftAddr string
}

func (a *nodeAPI) handleAddVoter(w http.ResponseWriter, r *http.Request) {
	var req addVoterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: err.Error()})
		return
	}
	if err := a.n.addVoter(req.ID, req.RaftAddr); err != nil {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()})
		return
	}
	writeAPIJSON(w, http.StatusOK, OK{OK: true})
}

type removeRequest struct{ ID string }

func (a *nodeAPI) handleRemove(w http.ResponseWriter, r *http.Request) {
	var req removeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeAPIError(w, &APIError{Status: 400, Code: CodeBadRequest, Message: err.Error()})
		return
	}
	if !a.n.isLeader() {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "not_leader", Message: "this node is not the leader"})
		return
	}
	if err := a.n.raft.raft.RemoveServer(raft.ServerID(req.ID), 0, 10*time.Second).Error(); err != nil {
		writeAPIError(w, &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()})
		return
	}
	writeAPIJSON(w, http.StatusOK, OK{OK: true})
}

// addVoter adds a node to the Raft configuration, on the leader or through
// it.
func (n *Node) addVoter(id, raftAddr string) error {
	if n.isLeader() {
		return n.raft.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, 10*time.Second).Error()
	}
	addr, err := n.leaderAPI()
	if err != nil {
		return n.noQuorum(err)
	}
	body, _ := json.Marshal(addVoterRequest{ID: id, RaftAddr: raftAddr})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return n.api.call(ctx, addr, "/v1/internal/addvoter", body, nil)
}
