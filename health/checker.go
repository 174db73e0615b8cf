package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Checker runs one active check. Check must return when ctx is done; the
// Monitor sets ctx's deadline to the check timeout.
type Checker interface {
	Check(ctx context.Context) Result
}

// MaxBody bounds how much of a response an HTTP check reads, and how much
// a TCP check reads while waiting for an expected string.
const MaxBody = 16 << 10

// maxAgentLine bounds an agent's reply line.
const maxAgentLine = 1024

// CheckerOptions are what a checker needs beyond the check definition.
type CheckerOptions struct {
	// RootCAs verifies server certificates; nil: the system pool.
	RootCAs *x509.CertPool
	// Dialer dials the server; nil: a plain net.Dialer.
	Dialer *net.Dialer
}

// CheckAddress returns the address a check of server s connects to: the
// server's host with the check port, or the server's own port.
func CheckAddress(s *state.Server, hc *state.HealthCheck) (string, error) {
	host, port, err := net.SplitHostPort(s.Address)
	if err != nil {
		return "", fmt.Errorf("server %s: %w", s.Name, err)
	}
	if hc.Port != 0 {
		port = strconv.Itoa(hc.Port)
	}
	return net.JoinHostPort(host, port), nil
}

// NewChecker builds the checker of server s for the effective check hc
// (see state.ServerCheck).
func NewChecker(s *state.Server, hc *state.HealthCheck, o CheckerOptions) (Checker, error) {
	addr, err := CheckAddress(s, hc)
	if err != nil {
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	d := dialer{addr: addr, d: o.Dialer}
	tlsConf := func() *tls.Config {
		name := hc.TLSServerName
		if name == "" {
			name = host
		}
		return &tls.Config{ServerName: name, RootCAs: o.RootCAs, InsecureSkipVerify: !hc.VerifiesTLS(), MinVersion: tls.VersionTLS12}
	}
	switch hc.Type {
	case state.CheckTCP:
		return &TCPChecker{dialer: d, Send: slices.Clone(hc.TCPSend), Expect: slices.Clone(hc.TCPExpect)}, nil
	case state.CheckTLS:
		return &TLSChecker{dialer: d, Config: tlsConf()}, nil
	case state.CheckAgent:
		return &AgentChecker{dialer: d}, nil
	case state.CheckHTTP:
		c := &HTTPChecker{dialer: d, Method: hc.Method, Expect: slices.Clone(hc.ExpectStatus), Body: hc.ExpectBody}
		if hc.IsHTTPS() {
			c.TLS = tlsConf()
		}
		if hc.BodyIsRegex() {
			if c.BodyRE, err = regexp.Compile(hc.ExpectBody); err != nil {
				return nil, fmt.Errorf("expect_body: %w", err)
			}
		}
		hostHdr := hc.Host
		if hostHdr == "" {
			hostHdr = addr
		}
		c.request = buildRequest(hc.Method, hc.Path, hostHdr, hc.Headers)
		return c, nil
	}
	return nil, fmt.Errorf("unknown check type %q", hc.Type)
}

// NewAgentChecker builds the checker of server s's agent on agentPort.
func NewAgentChecker(s *state.Server, agentPort int, o CheckerOptions) (Checker, error) {
	addr, err := CheckAddress(s, &state.HealthCheck{Port: agentPort})
	if err != nil {
		return nil, err
	}
	return &AgentChecker{dialer: dialer{addr: addr, d: o.Dialer}}, nil
}

func buildRequest(method, path, host string, headers map[string]string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fulcrum-health\r\nAccept: */*\r\nConnection: close\r\n", method, path, host)
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\r\n", k, headers[k])
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

type dialer struct {
	addr string
	d    *net.Dialer
}

// dial connects at layer 4; on failure it returns the L4 result.
func (d dialer) dial(ctx context.Context, start time.Time) (net.Conn, *Result) {
	nd := d.d
	if nd == nil {
		nd = &net.Dialer{}
	}
	conn, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		if isTimeout(ctx, err) {
			return nil, fail(start, StatusL4Tout, "Layer4 timeout", err)
		}
		return nil, fail(start, StatusL4Con, "Layer4 connection problem", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Close the connection when ctx ends early (cancellation without a
	// deadline); the caller closes it otherwise.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	return stopConn{conn, stop}, nil
}

type stopConn struct {
	net.Conn
	stop func() bool
}

func (c stopConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func fail(start time.Time, s Status, reason string, err error) *Result {
	r := &Result{Status: s, Reason: reason, Duration: time.Since(start)}
	if err != nil {
		r.Detail = errDetail(err)
	}
	return r
}

// errDetail shortens a network error to its cause ("connection refused").
func errDetail(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) && se.Err != nil {
		err = se.Err
	}
	return err.Error()
}

func ok(start time.Time, s Status, reason string, code int) Result {
	return Result{OK: true, Status: s, Reason: reason, Code: code, Duration: time.Since(start)}
}

// TCPChecker connects, then for each i writes Send[i] followed by CRLF and
// waits until what it has read contains Expect[i] (HAProxy's tcp-check
// send/expect). Without Send and Expect it is a plain connect check.
type TCPChecker struct {
	dialer
	Send, Expect []string
}

// Check implements Checker.
func (c *TCPChecker) Check(ctx context.Context) Result {
	start := time.Now()
	conn, r := c.dial(ctx, start)
	if r != nil {
		return *r
	}
	defer conn.Close()
	if len(c.Send) == 0 && len(c.Expect) == 0 {
		return ok(start, StatusL4OK, "Layer4 check passed", 0)
	}
	var got []byte
	buf := make([]byte, 4096)
	for i := range max(len(c.Send), len(c.Expect)) {
		if i < len(c.Send) {
			if _, err := io.WriteString(conn, c.Send[i]+"\r\n"); err != nil {
				return *failIO(ctx, start, err)
			}
		}
		if i >= len(c.Expect) {
			continue
		}
		for !bytes.Contains(got, []byte(c.Expect[i])) {
			if len(got) >= MaxBody {
				return *fail(start, StatusL7Rsp, "TCPCHK did not match content", fmt.Errorf("no %q in the first %d bytes", c.Expect[i], MaxBody))
			}
			n, err := conn.Read(buf[:min(len(buf), MaxBody-len(got))])
			got = append(got, buf[:n]...)
			if err != nil && !bytes.Contains(got, []byte(c.Expect[i])) {
				if err == io.EOF {
					return *fail(start, StatusL7Rsp, "TCPCHK did not match content", fmt.Errorf("connection closed before %q", c.Expect[i]))
				}
				return *failIO(ctx, start, err)
			}
		}
		// The next expect matches what follows this one.
		idx := bytes.Index(got, []byte(c.Expect[i]))
		got = got[idx+len(c.Expect[i]):]
	}
	return ok(start, StatusL7OK, "Layer7 check passed", 0)
}

// failIO classifies an error after the connection was made.
func failIO(ctx context.Context, start time.Time, err error) *Result {
	if isTimeout(ctx, err) {
		return fail(start, StatusL7Tout, "Layer7 timeout", err)
	}
	return fail(start, StatusSockErr, "Socket error", err)
}

// TLSChecker completes a TLS handshake.
type TLSChecker struct {
	dialer
	Config *tls.Config
}

// Check implements Checker.
func (c *TLSChecker) Check(ctx context.Context) Result {
	start := time.Now()
	conn, r := c.dial(ctx, start)
	if r != nil {
		return *r
	}
	defer conn.Close()
	if _, r := handshake(ctx, start, conn, c.Config); r != nil {
		return *r
	}
	return ok(start, StatusL6OK, "Layer6 check passed", 0)
}

func handshake(ctx context.Context, start time.Time, conn net.Conn, conf *tls.Config) (*tls.Conn, *Result) {
	tc := tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		if isTimeout(ctx, err) {
			return nil, fail(start, StatusL6Tout, "Layer6 timeout", err)
		}
		return nil, fail(start, StatusL6Rsp, "Layer6 invalid response", err)
	}
	return tc, nil
}

// HTTPChecker sends one HTTP/1.1 request, written by hand, on a fresh
// connection (over TLS when TLS is set) and checks the status and,
// optionally, the first MaxBody bytes of the body.
type HTTPChecker struct {
	dialer
	Method string
	TLS    *tls.Config
	Expect state.StatusSet
	// Body must occur in the response body (matched by BodyRE if set).
	Body    string
	BodyRE  *regexp.Regexp
	request []byte
}

// Check implements Checker.
func (c *HTTPChecker) Check(ctx context.Context) Result {
	start := time.Now()
	conn, r := c.dial(ctx, start)
	if r != nil {
		return *r
	}
	defer conn.Close()
	var rw io.ReadWriter = conn
	if c.TLS != nil {
		tc, r := handshake(ctx, start, conn, c.TLS)
		if r != nil {
			return *r
		}
		rw = tc
	}
	if _, err := rw.Write(c.request); err != nil {
		return *failIO(ctx, start, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(io.LimitReader(rw, 3*MaxBody), 4096), &http.Request{Method: c.Method})
	if err != nil {
		if isTimeout(ctx, err) {
			return *fail(start, StatusL7Tout, "Layer7 timeout", err)
		}
		return *fail(start, StatusL7Rsp, "Layer7 invalid response", err)
	}
	defer resp.Body.Close()
	if !c.Expect.Contains(resp.StatusCode) {
		r := fail(start, StatusL7Sts, "Layer7 wrong status", nil)
		r.Code = resp.StatusCode
		return *r
	}
	if c.Body != "" {
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
		var matched bool
		if c.BodyRE != nil {
			matched = c.BodyRE.Match(body)
		} else {
			matched = bytes.Contains(body, []byte(c.Body))
		}
		if !matched {
			if err != nil && isTimeout(ctx, err) {
				r := fail(start, StatusL7Tout, "Layer7 timeout", err)
				r.Code = resp.StatusCode
				return *r
			}
			r := fail(start, StatusL7Rsp, "Layer7 invalid response", fmt.Errorf("body does not match %q", c.Body))
			r.Code = resp.StatusCode
			return *r
		}
	}
	return ok(start, StatusL7OK, "Layer7 check passed", resp.StatusCode)
}

// AgentChecker reads one line of HAProxy's agent-check protocol. As the
// main check of a server it passes unless it cannot read a reply or the
// reply says down, fail or stopped.
type AgentChecker struct {
	dialer
}

// Check implements Checker.
func (c *AgentChecker) Check(ctx context.Context) Result {
	start := time.Now()
	conn, r := c.dial(ctx, start)
	if r != nil {
		return *r
	}
	defer conn.Close()
	line, err := readLine(conn, maxAgentLine)
	if err != nil {
		return *failIO(ctx, start, err)
	}
	reply := ParseAgentReply(line)
	res := ok(start, StatusL7OK, "Layer7 check passed", 0)
	if reply.Down {
		res.OK, res.Status, res.Reason = false, StatusL7Sts, "agent reports down"
	}
	res.Detail = strings.TrimSpace(line)
	res.Agent = &reply
	return res
}

// readLine reads up to limit bytes, until a newline or EOF.
func readLine(r io.Reader, limit int) (string, error) {
	var got []byte
	buf := make([]byte, 256)
	for len(got) < limit {
		n, err := r.Read(buf[:min(len(buf), limit-len(got))])
		got = append(got, buf[:n]...)
		if i := bytes.IndexByte(got, '\n'); i >= 0 {
			return string(got[:i]), nil
		}
		if err == io.EOF {
			return string(got), nil
		}
		if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("agent reply longer than %d bytes", limit)
}

// AgentReply is a parsed agent-check reply.
type AgentReply struct {
	// Admin is set when SetAdmin: drain gives DRAIN, maint MAINT, ready
	// and up READY.
	Admin    Admin `json:"admin"`
	SetAdmin bool  `json:"set_admin,omitempty"`
	// Up and Down are the operational words: up; down, fail, stopped.
	Up   bool `json:"up,omitempty"`
	Down bool `json:"down,omitempty"`
	// WeightPct is a weight in percent of the configured weight, -1 when
	// the reply has none.
	WeightPct int `json:"weight_pct"`
	// Reason is the text after '#', if any.
	Reason string `json:"reason,omitempty"`
}

// ParseAgentReply parses one agent line: words separated by spaces,
// tabs or commas, among up, down, fail, stopped, ready, drain, maint and
// a weight such as 75%; text after '#' is the reason. Unknown words are
// ignored, as HAProxy does. When words conflict the last one wins.
func ParseAgentReply(line string) AgentReply {
	r := AgentReply{WeightPct: -1}
	line, reason, _ := strings.Cut(line, "#")
	r.Reason = strings.TrimSpace(reason)
	words := strings.FieldsFunc(line, func(c rune) bool { return c == ' ' || c == '\t' || c == ',' || c == '\r' || c == '\n' })
	for _, w := range words {
		w = strings.ToLower(w)
		switch w {
		case "up":
			// As in HAProxy, "up" is the operational state only; "ready"
			// clears DRAIN and MAINT.
			r.Up, r.Down = true, false
		case "down", "fail", "stopped":
			r.Up, r.Down = false, true
		case "ready":
			r.Admin, r.SetAdmin = AdminReady, true
		case "drain":
			r.Admin, r.SetAdmin = AdminDrain, true
		case "maint":
			r.Admin, r.SetAdmin = AdminMaint, true
		default:
			if pct, ok := strings.CutSuffix(w, "%"); ok {
				if n, err := strconv.Atoi(pct); err == nil && n >= 0 && n <= 256 {
					r.WeightPct = n
				}
			}
		}
	}
	return r
}
