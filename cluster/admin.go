package cluster

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fulcrum-lb/fulcrum/cluster/pki"
	"github.com/fulcrum-lb/fulcrum/health"
	"github.com/fulcrum-lb/fulcrum/proxy"
	"github.com/fulcrum-lb/fulcrum/state"
)

// The admin API is HTTP/1.1 with JSON bodies on the node's unix socket. A
// failed call answers a non-2xx status with {"error": APIError}.

// Admin API error codes.
const (
	CodeInvalidConfig = "invalid_config" // the proxy config was refused
	CodeApplyFailed   = "apply_failed"   // the engine could not put a valid config in service
	CodeNotRunning    = "not_running"    // the agent is starting or stopping
	CodeNotFound      = "not_found"      // no such endpoint, backend or server
	CodeBadRequest    = "bad_request"    // the request body is not what the endpoint takes
	CodeInternal      = "internal"
)

// APIError is an admin API failure as it crosses the wire: a code for
// programs, a message for people, and for a refused config every fault with
// its path.
type APIError struct {
	// Status is the HTTP status the error comes with (not in the body).
	Status  int                `json:"-"`
	Code    string             `json:"code"`
	Message string             `json:"message"`
	Faults  []state.FieldError `json:"faults,omitempty"`
}

// Error returns the message; the faults are in Faults.
func (e *APIError) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

type errorBody struct {
	Error *APIError `json:"error"`
}

// OK is the body of a successful call that returns nothing else.
type OK struct {
	OK bool `json:"ok"`
}

const (
	adminSocketMode = 0o660
	adminDirMode    = 0o750
	adminCloseGrace = 5 * time.Second
	maxResponseBody = 64 << 20
)

// adminServer serves the admin API of one agent. One handler per endpoint:
// later issues add theirs in routes.
type adminServer struct {
	agent *Agent
	log   *slog.Logger
	ln    *net.UnixListener
	srv   *http.Server
}

// listenAdmin creates the admin socket: the parent directory (0750) if
// missing, a stale socket file removed, the socket made 0660.
func listenAdmin(a *Agent, path string) (*adminServer, error) {
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	s := &adminServer{agent: a, log: a.log.With("component", "admin"), ln: ln}
	mux := http.NewServeMux()
	s.routes(mux)
	// The same API serves remote CLIs with an operator certificate on
	// the node API port.
	a.nodeOpts.Admin = operatorOnly(s.logRequests(mux))
	s.srv = &http.Server{
		Handler:           s.logRequests(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *adminServer) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/health", s.handleHealth)
	mux.HandleFunc("GET /v1/stats", s.handleStats)
	mux.HandleFunc("GET /v1/config", s.handleConfig)
	mux.HandleFunc("POST /v1/reload", s.handleReload)
	mux.HandleFunc("GET /v1/servers", s.handleServers)
	mux.HandleFunc("GET /v1/servers/{backend}/{server}", s.handleServer)
	mux.HandleFunc("POST /v1/servers/{backend}/{server}/state", s.handleServerState)
	mux.HandleFunc("POST /v1/servers/{backend}/{server}/weight", s.handleServerWeight)
	s.routesCluster(mux)
	s.routesRecovery(mux)
	s.routesVIP(mux)
	// Go's profiles, for operators and `make profile`: e.g.
	// curl --unix-socket admin.sock http://x/debug/pprof/profile?seconds=10
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", s.handleNotFound)
}

func listenUnix(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), adminDirMode); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on it (is an agent running?)", path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, adminSocketMode); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serve serves until close; it returns nil after close.
func (s *adminServer) serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// close stops accepting, lets calls in progress finish for a few seconds,
// then closes what is left.
func (s *adminServer) close(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminCloseGrace)
	defer cancel()
	if err := s.srv.Shutdown(cctx); err != nil {
		return errors.Join(err, s.srv.Close())
	}
	return nil
}

func (s *adminServer) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		s.log.Debug("admin call", "method", r.Method, "path", r.URL.Path, "status", sw.status)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (s *adminServer) handleHealth(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.agent.Health())
}

func (s *adminServer) handleStats(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.agent.Stats())
}

func (s *adminServer) handleConfig(w http.ResponseWriter, r *http.Request) {
	rc := s.agent.RunningConfig()
	if rc == nil {
		s.writeError(w, apiErrorOf(ErrNotRunning))
		return
	}
	s.writeJSON(w, http.StatusOK, rc)
}

func (s *adminServer) handleReload(w http.ResponseWriter, r *http.Request) {
	if err := s.agent.Reload(); err != nil {
		s.writeError(w, apiErrorOf(err))
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

func (s *adminServer) handleServers(w http.ResponseWriter, r *http.Request) {
	servers, err := s.agent.Servers()
	if err != nil {
		s.writeError(w, apiErrorOf(err))
		return
	}
	s.writeJSON(w, http.StatusOK, servers)
}

func (s *adminServer) handleServer(w http.ResponseWriter, r *http.Request) {
	st, err := s.agent.Server(r.PathValue("backend"), r.PathValue("server"))
	if err != nil {
		s.writeError(w, apiErrorOf(err))
		return
	}
	s.writeJSON(w, http.StatusOK, st)
}

// StateRequest is the body of POST /v1/servers/{backend}/{server}/state:
// the operator's admin state, "ready", "drain" or "maint".
type StateRequest struct {
	Admin string `json:"admin"`
}

// WeightRequest is the body of POST /v1/servers/{backend}/{server}/weight:
// {"weight": N} sets the runtime weight (0 to 256); {"weight": null} or
// {"reset": true} drops it, back to the configured weight.
type WeightRequest struct {
	Weight *int `json:"weight,omitempty"`
	Reset  bool `json:"reset,omitempty"`
}

// maxRequestBody bounds the body of an admin call.
const maxRequestBody = 64 << 10

func (s *adminServer) handleServerState(w http.ResponseWriter, r *http.Request) {
	var req StateRequest
	if err := decodeBody(w, r, &req); err != nil {
		s.writeError(w, badRequest(err.Error()))
		return
	}
	if req.Admin == "" {
		s.writeError(w, badRequest(`want {"admin": "ready" | "drain" | "maint"}`))
		return
	}
	admin, err := health.ParseAdmin(req.Admin)
	if err != nil {
		s.writeError(w, badRequest(err.Error()))
		return
	}
	st, err := s.agent.SetServerAdmin(r.PathValue("backend"), r.PathValue("server"), admin)
	if err != nil {
		s.writeError(w, apiErrorOf(err))
		return
	}
	s.writeJSON(w, http.StatusOK, st)
}

func (s *adminServer) handleServerWeight(w http.ResponseWriter, r *http.Request) {
	// Decoded by hand: {"weight": null} (reset) differs from no weight.
	var fields map[string]json.RawMessage
	if err := decodeBody(w, r, &fields); err != nil {
		s.writeError(w, badRequest(err.Error()))
		return
	}
	weight, err := parseWeightRequest(fields)
	if err != nil {
		s.writeError(w, badRequest(err.Error()))
		return
	}
	st, err := s.agent.SetServerWeight(r.PathValue("backend"), r.PathValue("server"), weight)
	if err != nil {
		s.writeError(w, apiErrorOf(err))
		return
	}
	s.writeJSON(w, http.StatusOK, st)
}

// parseWeightRequest returns the weight a WeightRequest asks for, -1 for a
// reset.
func parseWeightRequest(fields map[string]json.RawMessage) (int, error) {
	const want = `want {"weight": N} with N from 0 to 256, or {"reset": true}`
	for k := range fields {
		if k != "weight" && k != "reset" {
			return 0, fmt.Errorf("unknown field %q: %s", k, want)
		}
	}
	var reset bool
	if raw, ok := fields["reset"]; ok {
		if err := json.Unmarshal(raw, &reset); err != nil {
			return 0, fmt.Errorf("reset must be true or false: %s", want)
		}
	}
	raw, hasWeight := fields["weight"]
	null := hasWeight && string(raw) == "null"
	switch {
	case reset && hasWeight && !null:
		return 0, fmt.Errorf("both a weight and reset: %s", want)
	case reset || null:
		return -1, nil
	case !hasWeight:
		return 0, errors.New(want)
	}
	var weight int
	if err := json.Unmarshal(raw, &weight); err != nil {
		return 0, fmt.Errorf("weight %s is not an integer: %s", raw, want)
	}
	if weight < 0 || weight > 256 {
		return 0, fmt.Errorf("weight %d out of range: %s", weight, want)
	}
	return weight, nil
}

// decodeBody decodes the one JSON value of the request body into v,
// refusing unknown fields, trailing data and bodies over maxRequestBody.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: want a JSON object")
		}
		return fmt.Errorf("body: %w", err)
	}
	if dec.More() {
		return errors.New("body: more than one JSON value")
	}
	return nil
}

func badRequest(msg string) *APIError {
	return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Message: msg}
}

func (s *adminServer) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, &APIError{
		Status:  http.StatusNotFound,
		Code:    CodeNotFound,
		Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path),
	})
}

// apiErrorOf maps an agent error to its wire form and HTTP status.
func apiErrorOf(err error) *APIError {
	if ce, ok := errors.AsType[*ConfigError](err); ok {
		e := &APIError{Status: http.StatusUnprocessableEntity, Code: CodeInvalidConfig, Message: ce.Error()}
		if len(ce.Faults) > 0 {
			e.Message = fmt.Sprintf("proxy config %s has %d fault(s); running config kept", ce.Source, len(ce.Faults))
			e.Faults = ce.Faults
		}
		return e
	}
	if ae, ok := errors.AsType[*ApplyError](err); ok {
		return &APIError{Status: http.StatusInternalServerError, Code: CodeApplyFailed, Message: ae.Error() + "; running config kept"}
	}
	if nf, ok := errors.AsType[*ServerNotFoundError](err); ok {
		return &APIError{Status: http.StatusNotFound, Code: CodeNotFound, Message: nf.Error()}
	}
	if errors.Is(err, ErrNotRunning) {
		return &APIError{Status: http.StatusServiceUnavailable, Code: CodeNotRunning, Message: err.Error()}
	}
	return &APIError{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()}
}

func (s *adminServer) writeError(w http.ResponseWriter, e *APIError) {
	s.writeJSON(w, e.Status, errorBody{Error: e})
}

func (s *adminServer) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		s.log.Error("encode admin response", "err", err)
		status = http.StatusInternalServerError
		body, _ = json.Marshal(errorBody{Error: &APIError{Code: CodeInternal, Message: "encode response: " + err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// AdminClient calls the admin API of the agent on a unix socket.
type AdminClient struct {
	base string // http://fulcrum on the socket, https://HOST:PORT remote
	hc   *http.Client
}

// NewAdminClient returns a client of the agent listening on socketPath.
// Calls are bounded by their context only.
func NewAdminClient(socketPath string) *AdminClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &AdminClient{base: "http://fulcrum", hc: &http.Client{Transport: tr}}
}

// NewRemoteAdminClient returns a client of the agent at addr (a node's
// API address, host:api_port) over mutual TLS with an operator
// certificate from `fulcrum cluster issue-cert` and the cluster's CA.
func NewRemoteAdminClient(addr, certFile, keyFile, caFile string) (*AdminClient, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("operator key: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	cert, err := pki.KeyPair(certPEM, keyPEM, caPEM)
	if err != nil {
		return nil, fmt.Errorf("operator certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CA %s: no certificate in it", caFile)
	}
	tr := &http.Transport{TLSClientConfig: pki.ClientTLS(pool, cert, "", nil), MaxIdleConns: 1, IdleConnTimeout: 30 * time.Second}
	return &AdminClient{base: "https://" + addr, hc: &http.Client{Transport: tr}}, nil
}

// Close releases the client's idle connection.
func (c *AdminClient) Close() { c.hc.CloseIdleConnections() }

// Health calls GET /v1/health.
func (c *AdminClient) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, http.MethodGet, "/v1/health", nil, &h)
	return h, err
}

// Stats calls GET /v1/stats.
func (c *AdminClient) Stats(ctx context.Context) (proxy.Stats, error) {
	var st proxy.Stats
	err := c.call(ctx, http.MethodGet, "/v1/stats", nil, &st)
	return st, err
}

// StatsJSON calls GET /v1/stats and returns the body as received.
func (c *AdminClient) StatsJSON(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.call(ctx, http.MethodGet, "/v1/stats", nil, &raw)
	return raw, err
}

// Config calls GET /v1/config.
func (c *AdminClient) Config(ctx context.Context) (RunningConfig, error) {
	var rc RunningConfig
	err := c.call(ctx, http.MethodGet, "/v1/config", nil, &rc)
	return rc, err
}

// Reload calls POST /v1/reload. A refused config comes back as an
// *APIError with code invalid_config and its faults.
func (c *AdminClient) Reload(ctx context.Context) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/reload", nil, &ok)
}

// ServerState is a server's health as a client reads it from the admin
// API: the main fields of health.ServerStatus, under the same JSON names,
// with the states as their names.
type ServerState struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Address string `json:"address"`
	Backup  bool   `json:"backup"`
	// State is UP, DOWN, DRAIN or MAINT.
	State string `json:"state"`
	// Admin is the operator's admin state (READY, DRAIN, MAINT),
	// AgentAdmin the agent check's.
	Admin      string `json:"admin"`
	AgentAdmin string `json:"agent_admin"`
	Checked    bool   `json:"checked"`
	Health     int    `json:"health"`
	Rise       int    `json:"rise"`
	Fall       int    `json:"fall"`
	// Weight is the effective weight; WeightOverride the operator's, -1
	// when none; AgentWeight the agent's percentage, -1 when none.
	Weight           int    `json:"weight"`
	ConfiguredWeight int    `json:"configured_weight"`
	WeightOverride   int    `json:"weight_override"`
	AgentWeight      int    `json:"agent_weight"`
	ChkFail          uint64 `json:"chkfail"`
	ChkDown          uint64 `json:"chkdown"`
}

// Servers calls GET /v1/servers: every server's health, in config order.
func (c *AdminClient) Servers(ctx context.Context) ([]ServerState, error) {
	var out []ServerState
	err := c.call(ctx, http.MethodGet, "/v1/servers", nil, &out)
	return out, err
}

// ServersJSON calls GET /v1/servers and returns the body as received
// Server calls GET /v1/servers/{backend}/{server}.
func (c *AdminClient) Server(ctx context.Context, backend, server string) (ServerState, error) {
	var st ServerState
	err := c.call(ctx, http.MethodGet, serverPath(backend, server, ""), nil, &st)
	return st, err
}

// SetServerAdmin calls POST /v1/servers/{backend}/{server}/state. An
// unknown server comes back as an *APIError with code not_found.
func (c *AdminClient) SetServerAdmin(ctx context.Context, backend, server string, admin health.Admin) (ServerState, error) {
	var st ServerState
	req := StateRequest{Admin: strings.ToLower(admin.String())}
	err := c.call(ctx, http.MethodPost, serverPath(backend, server, "state"), req, &st)
	return st, err
}

// SetServerWeight calls POST /v1/servers/{backend}/{server}/weight with
// a weight from 0 to 256.
func (c *AdminClient) SetServerWeight(ctx context.Context, backend, server string, weight int) (ServerState, error) {
	var st ServerState
	err := c.call(ctx, http.MethodPost, serverPath(backend, server, "weight"), WeightRequest{Weight: &weight}, &st)
	return st, err
}

// ResetServerWeight calls POST /v1/servers/{backend}/{server}/weight to
// drop the runtime weight.
func (c *AdminClient) ResetServerWeight(ctx context.Context, backend, server string) (ServerState, error) {
	var st ServerState
	err := c.call(ctx, http.MethodPost, serverPath(backend, server, "weight"), WeightRequest{Reset: true}, &st)
	return st, err
}

func serverPath(backend, server, action string) string {
	p := "/v1/servers/" + url.PathEscape(backend) + "/" + url.PathEscape(server)
	if action != "" {
		p += "/" + action
	}
	return p
}

// call sends one request, with in as its JSON body unless nil, and
// decodes a 2xx body into out; any other status becomes an *APIError.
func (c *AdminClient) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the agent (is it running?): %w", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(respBody, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
			eb.Error.Status = resp.StatusCode
			return eb.Error
		}
		return &APIError{
			Status:  resp.StatusCode,
			Code:    fmt.Sprintf("http_%d", resp.StatusCode),
			Message: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(respBody))),
		}
	}
	if err := json.Unmarshal(respBody, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
