package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

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
	CodeNotFound      = "not_found"      // no such endpoint
	CodeInternal      = "internal"
)

// APIError is an admin API failure as it crosses the wire: a code for
// programs, a message for people, and for a refused config every fault with
// its path.
type APIError struct {
	// Status is the HTTP status the error came with (client side only).
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
		s.writeError(w, http.StatusServiceUnavailable, &APIError{Code: CodeNotRunning, Message: ErrNotRunning.Error()})
		return
	}
	s.writeJSON(w, http.StatusOK, rc)
}

func (s *adminServer) handleReload(w http.ResponseWriter, r *http.Request) {
	if err := s.agent.Reload(); err != nil {
		status, e := apiErrorOf(err)
		s.writeError(w, status, e)
		return
	}
	s.writeJSON(w, http.StatusOK, OK{OK: true})
}

func (s *adminServer) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, http.StatusNotFound, &APIError{
		Code:    CodeNotFound,
		Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path),
	})
}

// apiErrorOf maps an agent error to its HTTP status and wire form.
func apiErrorOf(err error) (int, *APIError) {
	if ce, ok := errors.AsType[*ConfigError](err); ok {
		e := &APIError{Code: CodeInvalidConfig, Message: ce.Error()}
		if len(ce.Faults) > 0 {
			e.Message = fmt.Sprintf("proxy config %s has %d fault(s); running config kept", ce.Source, len(ce.Faults))
			e.Faults = ce.Faults
		}
		return http.StatusUnprocessableEntity, e
	}
	if ae, ok := errors.AsType[*ApplyError](err); ok {
		return http.StatusInternalServerError, &APIError{Code: CodeApplyFailed, Message: ae.Error() + "; running config kept"}
	}
	if errors.Is(err, ErrNotRunning) {
		return http.StatusServiceUnavailable, &APIError{Code: CodeNotRunning, Message: err.Error()}
	}
	return http.StatusInternalServerError, &APIError{Code: CodeInternal, Message: err.Error()}
}

func (s *adminServer) writeError(w http.ResponseWriter, status int, e *APIError) {
	s.writeJSON(w, status, errorBody{Error: e})
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
	socket string
	hc     *http.Client
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
	return &AdminClient{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client dials.
func (c *AdminClient) Socket() string { return c.socket }

// Close releases the client's idle connection.
func (c *AdminClient) Close() { c.hc.CloseIdleConnections() }

// Health calls GET /v1/health.
func (c *AdminClient) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.call(ctx, http.MethodGet, "/v1/health", &h)
	return h, err
}

// Stats calls GET /v1/stats.
func (c *AdminClient) Stats(ctx context.Context) (proxy.Stats, error) {
	var st proxy.Stats
	err := c.call(ctx, http.MethodGet, "/v1/stats", &st)
	return st, err
}

// StatsJSON calls GET /v1/stats and returns the body as received.
func (c *AdminClient) StatsJSON(ctx context.Context) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.call(ctx, http.MethodGet, "/v1/stats", &raw)
	return raw, err
}

// Config calls GET /v1/config.
func (c *AdminClient) Config(ctx context.Context) (RunningConfig, error) {
	var rc RunningConfig
	err := c.call(ctx, http.MethodGet, "/v1/config", &rc)
	return rc, err
}

// Reload calls POST /v1/reload. A refused config comes back as an
// *APIError with code invalid_config and its faults.
func (c *AdminClient) Reload(ctx context.Context) error {
	var ok OK
	return c.call(ctx, http.MethodPost, "/v1/reload", &ok)
}

// call sends one request and decodes a 2xx body into out; any other status
// becomes an *APIError.
func (c *AdminClient) call(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://fulcrum"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach the agent (is it running?): %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(body, &eb) == nil && eb.Error != nil && eb.Error.Code != "" {
			eb.Error.Status = resp.StatusCode
			return eb.Error
		}
		return &APIError{
			Status:  resp.StatusCode,
			Code:    fmt.Sprintf("http_%d", resp.StatusCode),
			Message: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body))),
		}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
