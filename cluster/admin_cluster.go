package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// routesCluster adds the cluster and replicated-config endpoints.
func (s *adminServer) routesCluster(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/cluster/init", s.handleClusterInit)
	mux.HandleFunc("POST /v1/cluster/join", s.handleClusterJoin)
	mux.HandleFunc("POST /v1/cluster/leave", s.handleClusterLeave)
	mux.HandleFunc("POST /v1/cluster/remove", s.handleClusterRemove)
	mux.HandleFunc("POST /v1/cluster/failover", s.handleClusterFailover)
	mux.HandleFunc("GET /v1/cluster/status", s.handleClusterStatus)
	mux.HandleFunc("GET /v1/cluster/members", s.handleClusterMembers)
	mux.HandleFunc("POST /v1/config/apply", s.handleConfigApply)
	mux.HandleFunc("POST /v1/config/rollback", s.handleConfigRollback)
	mux.HandleFunc("GET /v1/config/history", s.handleConfigHistory)
	mux.HandleFunc("GET /v1/config/version", s.handleConfigVersion)
	mux.HandleFunc("GET /v1/config/diff", s.handleConfigDiff)
}

// clusterError maps an operation's error to the wire.
func clusterError(err error) *APIError {
	var ce *state.CommandError
	var es state.Errors
	var fwd *APIError // a write forwarded to the leader, refused there
	switch {
	case errors.Is(err, ErrStandalone):
		return &APIError{Status: http.StatusConflict, Code: "standalone", Message: err.Error()}
	case errors.Is(err, ErrNoQuorum):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()}
	case errors.As(err, &fwd) && (fwd.Code == "no_quorum" || fwd.Code == "not_leader"):
		return &APIError{Status: http.StatusServiceUnavailable, Code: "no_quorum", Message: err.Error()}
	case errors.As(err, &ce):
		st := http.StatusConflict
		if ce.Code == state.CodeInvalid {
			st = http.StatusUnprocessableEntity
		}
		return &APIError{Status: st, Code: string(ce.Code), Message: ce.Message, Faults: ce.Faults}
	case errors.As(err, &es):
		return &APIError{Status: http.StatusUnprocessableEntity, Code: CodeInvalidConfig, Message: "the config is invalid", Faults: es}
	}
	return &APIError{Status: http.StatusBadRequest, Code: "failed", Message: err.Error()}
}

// reply answers err (mapped to its code and status) or, without one, v.
func (s *adminServer) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		s.writeError(w, clusterError(err))
		return
	}
	s.writeJSON(w, http.StatusOK, v)
}

// wait parses a request's wait duration ("" = 5s), answering 400 if bad.
func (s *adminServer) wait(w http.ResponseWriter, str string) (time.Duration, bool) {
	d, err := parseWait(str)
	if err != nil {
		s.writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "wait: " + err.Error()})
		return 0, false
	}
	return d, true
}

func (s *adminServer) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(v); err != nil {
		s.writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "bad request body: " + err.Error()})
		return false
	}
	return true
}

func (s *adminServer) handleClusterInit(w http.ResponseWriter, r *http.Request) {
	res, err := s.agent.ClusterInit(r.Context())
	s.reply(w, res, err)
}

// JoinRequest is the body of POST /v1/cluster/join on the admin socket.
type JoinRequest struct {
	Address string `json:"address"`
	Token   string `json:"token"`
}

func (s *adminServer) handleClusterJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if !s.decode(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	if err := s.agent.ClusterJoin(ctx, req.Address, req.Token); err != nil {
		s.writeError(w, clusterError(err))
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

func (s *adminServer) handleClusterLeave(w http.ResponseWriter, r *http.Request) {
	if err := s.agent.ClusterLeave(r.Context()); err != nil {
		s.writeError(w, clusterError(err))
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

// NodeRequest names a node (remove, failover --to).
type NodeRequest struct {
	Node string `json:"node"`
}

func (s *adminServer) handleClusterRemove(w http.ResponseWriter, r *http.Request) {
	var req NodeRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := s.agent.ClusterRemove(r.Context(), req.Node); err != nil {
		s.writeError(w, clusterError(err))
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

func (s *adminServer) handleClusterFailover(w http.ResponseWriter, r *http.Request) {
	var req NodeRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := s.agent.ClusterFailover(r.Context(), req.Node); err != nil {
		s.writeError(w, clusterError(err))
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

func (s *adminServer) handleClusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.agent.ClusterStatus()
	s.reply(w, st, err)
}

func (s *adminServer) handleClusterMembers(w http.ResponseWriter, r *http.Request) {
	ms, err := s.agent.Members()
	s.reply(w, ms, err)
}

// ConfigApplyRequest is the body of POST /v1/config/apply.
type ConfigApplyRequest struct {
	YAML      string `json:"yaml"`
	IfVersion uint64 `json:"if_version,omitempty"`
	// Wait is how long to wait for every live node to run the version.
	Wait string `json:"wait,omitempty"`
}

// ConfigRollbackRequest is the body of POST /v1/config/rollback.
type ConfigRollbackRequest struct {
	To        uint64 `json:"to"`
	IfVersion uint64 `json:"if_version,omitempty"`
	Wait      string `json:"wait,omitempty"`
}

func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 5 * time.Second, nil
	}
	return time.ParseDuration(s)
}

func (s *adminServer) handleConfigApply(w http.ResponseWriter, r *http.Request) {
	var req ConfigApplyRequest
	if !s.decode(w, r, &req) {
		return
	}
	wait, ok := s.wait(w, req.Wait)
	if !ok {
		return
	}
	res, err := s.agent.ApplyConfig(r.Context(), req.YAML, req.IfVersion, wait)
	s.reply(w, res, err)
}

func (s *adminServer) handleConfigRollback(w http.ResponseWriter, r *http.Request) {
	var req ConfigRollbackRequest
	if !s.decode(w, r, &req) {
		return
	}
	wait, ok := s.wait(w, req.Wait)
	if !ok {
		return
	}
	res, err := s.agent.RollbackConfig(r.Context(), req.To, req.IfVersion, wait)
	s.reply(w, res, err)
}

func (s *adminServer) handleConfigHistory(w http.ResponseWriter, r *http.Request) {
	h, err := s.agent.ConfigHistory()
	s.reply(w, h, err)
}

func (s *adminServer) handleConfigVersion(w http.ResponseWriter, r *http.Request) {
	v, _ := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
	cv, err := s.agent.ConfigVersion(v)
	s.reply(w, cv, err)
}

func (s *adminServer) handleConfigDiff(w http.ResponseWriter, r *http.Request) {
	a, err1 := strconv.ParseUint(r.URL.Query().Get("a"), 10, 64)
	b, err2 := strconv.ParseUint(r.URL.Query().Get("b"), 10, 64)
	if err1 != nil || err2 != nil {
		s.writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: "diff needs versions a and b"})
		return
	}
	d, err := s.agent.ConfigDiff(a, b)
	s.reply(w, map[string]string{"diff": d}, err)
}
