package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// routesVIP adds the VIP and node-drain endpoints.
func (s *adminServer) routesVIP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/vip/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.agent.VIPStatus()
		s.reply(w, st, err)
	})
	mux.HandleFunc("POST /v1/vip/claim", func(w http.ResponseWriter, r *http.Request) {
		var req ForceRequest
		if !s.decode(w, r, &req) {
			return
		}
		if err := s.agent.ClaimVIP(req.Force); err != nil {
			s.writeError(w, clusterError(err))
			return
		}
		s.writeJSON(w, http.StatusOK, OK{OK: true})
	})
	mux.HandleFunc("POST /v1/node/drain", func(w http.ResponseWriter, r *http.Request) {
		if err := s.agent.DrainNode(r.Context()); err != nil {
			s.writeError(w, clusterError(err))
			return
		}
		s.writeJSON(w, http.StatusOK, OK{OK: true})
	})
	mux.HandleFunc("POST /v1/node/resume", func(w http.ResponseWriter, r *http.Request) {
		s.agent.ResumeNode()
		s.writeJSON(w, http.StatusOK, OK{OK: true})
	})
}

// ForceRequest carries an operator's --force.
type ForceRequest struct {
	Force bool `json:"force"`
}

// VIPStatus calls GET /v1/vip/status.
func (c *AdminClient) VIPStatus(ctx context.Context) (VIPStatus, error) {
	var st VIPStatus
	err := c.call(ctx, http.MethodGet, "/v1/vip/status", nil, &st)
	return st, err
}

// ClaimVIP calls POST /v1/vip/claim.
func (c *AdminClient) ClaimVIP(ctx context.Context, force bool) error {
	return c.call(ctx, http.MethodPost, "/v1/vip/claim", ForceRequest{Force: force}, &OK{})
}

// DrainNode calls POST /v1/node/drain; ResumeNode /v1/node/resume.
func (c *AdminClient) DrainNode(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/node/drain", struct{}{}, &OK{})
}

// ResumeNode calls POST /v1/node/resume.
func (c *AdminClient) ResumeNode(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/v1/node/resume", struct{}{}, &OK{})
}

// SaveSnapshot calls GET /v1/cluster/snapshot and writes it to w.
func (c *AdminClient) SaveSnapshot(ctx context.Context, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/cluster/snapshot", nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent (is it running?): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeAPIResponse(resp, nil)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// RestoreSnapshot calls POST /v1/cluster/snapshot with a saved snapshot.
func (c *AdminClient) RestoreSnapshot(ctx context.Context, snap []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/cluster/snapshot", bytes.NewReader(snap))
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the agent (is it running?): %w", err)
	}
	defer resp.Body.Close()
	return decodeAPIResponse(resp, nil)
}

// Recover calls POST /v1/cluster/recover.
func (c *AdminClient) Recover(ctx context.Context, force bool) error {
	path := "/v1/cluster/recover"
	if force {
		path += "?force=true"
	}
	return c.call(ctx, http.MethodPost, path, struct{}{}, &OK{})
}

// IssueCert calls POST /v1/cluster/issue-cert.
func (c *AdminClient) IssueCert(ctx context.Context, name string) (IssuedCert, error) {
	var ic IssuedCert
	err := c.call(ctx, http.MethodPost, "/v1/cluster/issue-cert", NodeRequest{Node: strings.TrimSpace(name)}, &ic)
	return ic, err
}
