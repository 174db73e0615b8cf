package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/cluster"
	"github.com/fulcrum-lb/fulcrum/proxy"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running
// command and the reads of the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runCLI runs the command line in-process and returns its exit code and
// output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// clearEnv keeps the caller's environment out of socket resolution.
func clearEnv(t *testing.T) {
	for _, k := range []string{"FULCRUM_ADMIN_SOCKET", "FULCRUM_SOCKET", "FULCRUM_NODE_NAME", "FULCRUM_NODE_DATA_DIR",
		"FULCRUM_PROXY_CONFIG", "FULCRUM_LOG_LEVEL", "FULCRUM_LOG_FORMAT", "NOTIFY_SOCKET"} {
		t.Setenv(k, "")
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitFor polls cond until it holds, failing the test after a bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const goodConfig = `
frontends:
  - name: web
    bind: ["127.0.0.1:8080"]
    default_backend: app
backends:
  - name: app
    servers:
      - {name: app1, address: 127.0.0.1:9001}
`

const badConfig = `
frontends:
  - name: web
    bind: ["127.0.0.1:8080"]
    default_backend: nowhere
backends:
  - name: app
    servers:
      - {name: app1, address: 127.0.0.1:9001}
  - name: api
    servers:
      - {name: api1, address: 10.0.0.1}
`

func TestConfigValidateGood(t *testing.T) {
	f := writeFile(t, filepath.Join(t.TempDir(), "lb.yaml"), goodConfig)
	code, out, errOut := runCLI(t, "config", "validate", "-f", f)
	if code != 0 || out != f+": valid (1 frontends, 1 backends)\n" || errOut != "" {
		t.Errorf("exit %d\nstdout %q\nstderr %q", code, out, errOut)
	}

	empty := writeFile(t, filepath.Join(t.TempDir(), "empty.yaml"), "")
	if code, out, _ := runCLI(t, "config", "validate", "-f", empty); code != 0 || !strings.HasSuffix(out, ": valid (0 frontends, 0 backends)\n") {
		t.Errorf("empty config: exit %d %q", code, out)
	}
}

func TestConfigValidateBad(t *testing.T) {
	f := writeFile(t, filepath.Join(t.TempDir(), "lb.yaml"), badConfig)
	code, out, errOut := runCLI(t, "config", "validate", "-f", f)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	want := []string{
		`frontends[0].default_backend: unknown backend "nowhere"`,
		"backends[1].servers[0].address: missing port",
		"fulcrum: " + f + ": invalid, 2 fault(s)",
	}
	if len(lines) != len(want) {
		t.Fatalf("stderr:\n%s", errOut)
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || l == w
		}
		if !found {
			t.Errorf("stderr lacks the line %q:\n%s", w, errOut)
		}
	}

	code, out, _ = runCLI(t, "config", "validate", "--json", "-f", f)
	var res validateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Valid || len(res.Faults) != 2 ||
		res.Faults[0].Path != "backends[1].servers[0].address" || res.Faults[0].Msg != "missing port" {
		t.Errorf("--json: exit %d, %+v, %v\n%s", code, res, err, out)
	}
}

func TestConfigValidateDecodeErrors(t *testing.T) {
	f := writeFile(t, filepath.Join(t.TempDir(), "lb.yaml"), "global:\n  maxconns: 1\n")
	code, _, errOut := runCLI(t, "config", "validate", "-f", f)
	if code != 1 || !strings.HasPrefix(errOut, "fulcrum: "+f+": decode:") || !strings.Contains(errOut, "maxconns") {
		t.Errorf("unknown key: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "config", "validate", "-f", filepath.Join(t.TempDir(), "absent.yaml"))
	if code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "config", "validate")
	if code != 1 || !strings.Contains(errOut, "-f FILE is required") {
		t.Errorf("no -f: exit %d %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || out != "fulcrum "+version+"\n" {
		t.Errorf("exit %d %q", code, out)
	}
	code, out, _ = runCLI(t, "version", "--json")
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 || v.Version != version || v.Go != runtime.Version() {
		t.Errorf("exit %d %q: %v", code, out, err)
	}
}

func TestUsageErrors(t *testing.T) {
	code, _, errOut := runCLI(t, "bogus")
	if code != 1 || !strings.HasPrefix(errOut, `fulcrum: unknown command "bogus"`) {
		t.Errorf("exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "version", "--nope")
	if code != 1 || errOut != "fulcrum: unknown flag: --nope\nRun 'fulcrum version --help' for usage.\n" {
		t.Errorf("exit %d %q", code, errOut)
	}
}

// TestSocketResolution checks the order --socket > env > --config >
// default by the socket each failed call names.
func TestSocketResolution(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	node := writeFile(t, filepath.Join(dir, "node.yaml"), "admin: {socket: from-config.sock}\n")

	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"flag wins", map[string]string{"FULCRUM_ADMIN_SOCKET": "/env.sock"}, []string{"--socket", "/flag.sock", "--config", node}, "/flag.sock"},
		{"admin env", map[string]string{"FULCRUM_ADMIN_SOCKET": "/env.sock", "FULCRUM_SOCKET": "/env2.sock"}, []string{"--config", node}, "/env.sock"},
		{"short env", map[string]string{"FULCRUM_SOCKET": "/env2.sock"}, []string{"--config", node}, "/env2.sock"},
		{"node config, relative to it", nil, []string{"--config", node}, filepath.Join(dir, "from-config.sock")},
		{"missing --config", nil, []string{"--config", "/nonexistent/fulcrum.yaml"}, ""},
		{"default", nil, nil, cluster.DefaultAdminSocket},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.args == nil {
				if _, err := os.Stat(cluster.DefaultNodeConfigPath); err == nil {
					t.Skip(cluster.DefaultNodeConfigPath + " exists here")
				}
				if _, err := os.Stat(cluster.DefaultAdminSocket); err == nil {
					t.Skip("an agent may serve on " + cluster.DefaultAdminSocket)
				}
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, _, errOut := runCLI(t, append([]string{"stats"}, tc.args...)...)
			if tc.want == "" {
				// An explicit --config that is missing is an error.
				if code != 1 || !strings.Contains(errOut, "node config /nonexistent/fulcrum.yaml") {
					t.Errorf("exit %d %q", code, errOut)
				}
				return
			}
			if code != 1 || !strings.Contains(errOut, "dial unix "+tc.want+":") {
				t.Errorf("exit %d %q, want a dial to %s", code, errOut, tc.want)
			}
		})
	}
}

func TestStatsTable(t *testing.T) {
	v := proxy.CounterValues{CurSessions: 1, MaxSessions: 2, TotalSessions: 3, BytesIn: 4, BytesOut: 5,
		Resp2xx: 6, Resp4xx: 7, Resp5xx: 8, ReqErrors: 9, ConnErrors: 10, RespErrors: 11, Retries: 12,
		Redispatches: 13, QueueCur: 14, QueueMax: 15}
	st := proxy.Stats{
		Frontends: []proxy.FrontendStats{{Name: "web", CounterValues: v}},
		Backends: []proxy.BackendStats{
			{Name: "app", CounterValues: v, Servers: []proxy.ServerStats{
				{Name: "app1", Status: "UP", Weight: 3, CheckStatus: "L7OK", CheckCode: 200, CheckDurationMs: 3,
					LastChangeSec: 12, CounterValues: v},
				{Name: "app2", Status: "DOWN", Weight: 1, CheckStatus: "L4CON", LastChangeSec: 184, ChkFail: 4,
					ChkDown: 1, CounterValues: v},
				{Name: "app3", Status: "MAINT", Weight: 1, LastChangeSec: 7300, CounterValues: v},
				{Name: "bk", Status: "UP", Weight: 5, Backup: true, LastChangeSec: 90000, CounterValues: v},
			}},
			{Name: "empty"},
		},
	}
	var buf bytes.Buffer
	if err := writeStatsTable(&buf, st); err != nil {
		t.Fatal(err)
	}
	// Cells are separated by two spaces at least; "L7OK/200 3ms" holds one.
	got := regexp.MustCompile(`  +`).ReplaceAllString(buf.String(), "|")
	want := `pxname|svname|status|weight|check|lastchg|chkfail|chkdown|scur|smax|stot|bin|bout|2xx|4xx|5xx|ereq|econ|eresp|wretr|wredis|qcur|qmax
web|FRONTEND|OPEN|-|-|-|-|-|1|2|3|4|5|6|7|8|9|-|-|-|-|-|-
app|app1|UP|3|L7OK/200 3ms|12s|0|0|1|2|3|4|5|6|7|8|-|10|11|12|13|14|15
app|app2|DOWN|1|L4CON 0ms|3m4s|4|1|1|2|3|4|5|6|7|8|-|10|11|12|13|14|15
app|app3|MAINT|1|-|2h1m|0|0|1|2|3|4|5|6|7|8|-|10|11|12|13|14|15
app|bk|UP|5|-|1d1h|0|0|1|2|3|4|5|6|7|8|-|10|11|12|13|14|15
app|BACKEND|UP|3|-|-|-|-|1|2|3|4|5|6|7|8|-|10|11|12|13|14|15
empty|BACKEND|DOWN|0|-|-|-|-|0|0|0|0|0|0|0|0|-|0|0|0|0|0|0
`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestBackendWeight(t *testing.T) {
	for _, tc := range []struct {
		servers []proxy.ServerStats
		want    int
	}{
		{nil, 0},
		{[]proxy.ServerStats{{Status: "UP", Weight: 2}, {Status: "DRAIN", Weight: 4}, {Status: "UP", Weight: 3, Backup: true}}, 2},
		{[]proxy.ServerStats{{Status: "DOWN", Weight: 2}, {Status: "UP", Weight: 3, Backup: true}, {Status: "UP", Weight: 1, Backup: true}}, 4},
		{[]proxy.ServerStats{{Status: "MAINT", Weight: 2}, {Status: "DOWN", Weight: 3, Backup: true}}, 0},
	} {
		if got := backendWeight(tc.servers); got != tc.want {
			t.Errorf("backendWeight(%+v) = %d, want %d", tc.servers, got, tc.want)
		}
	}
}

func TestServerArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"server", "drain"}, "fulcrum: want one BACKEND/SERVER argument, got 0\nRun 'fulcrum server drain --help' for usage.\n"},
		{[]string{"server", "disable", "app"}, `fulcrum: invalid server "app": want BACKEND/SERVER, such as app/app1` + "\n"},
		{[]string{"server", "enable", "app/"}, `invalid server "app/"`},
		{[]string{"server", "enable", "/app1"}, `invalid server "/app1"`},
		{[]string{"server", "enable", "app/a/b"}, `invalid server "app/a/b"`},
		{[]string{"server", "enable", "app/app1", "app/app2"}, "want one BACKEND/SERVER argument, got 2"},
		{[]string{"server", "weight", "app/app1"}, "want BACKEND/SERVER and a weight (N or reset), got 1 argument(s)"},
		{[]string{"server", "weight", "app/app1", "257"}, `invalid weight "257": want an integer from 0 to 256, or reset`},
		{[]string{"server", "weight", "app/app1", "--", "-1"}, `invalid weight "-1"`},
		{[]string{"server", "weight", "app/app1", "half"}, `invalid weight "half"`},
		{[]string{"server", "weight", "app1", "3"}, `invalid server "app1"`},
		{[]string{"server", "bogus"}, `unknown command "bogus" for "fulcrum server"`},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.err) || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q and a usage hint", tc.args, code, out, errOut, tc.err)
		}
	}
	if w, err := parseWeightArg("RESET"); err != nil || w != -1 {
		t.Errorf("parseWeightArg(RESET) = %d, %v", w, err)
	}
	if r, err := parseServerRef("app/app1"); err != nil || r != (serverRef{"app", "app1"}) || r.String() != "app/app1" {
		t.Errorf("parseServerRef(app/app1) = %+v, %v", r, err)
	}
}

func TestServerDescriptions(t *testing.T) {
	for _, tc := range []struct {
		st                cluster.ServerState
		state, weightLine string
	}{
		{cluster.ServerState{State: "MAINT", Admin: "MAINT", Weight: 1, ConfiguredWeight: 1, WeightOverride: -1},
			"MAINT", "weight 1 (configured)"},
		{cluster.ServerState{State: "DOWN", Admin: "DRAIN", Weight: 3, ConfiguredWeight: 1, WeightOverride: 3},
			"DOWN (admin DRAIN)", "weight 3 (configured 1)"},
		{cluster.ServerState{State: "UP", Admin: "READY", Weight: 2, ConfiguredWeight: 1, WeightOverride: 8},
			"UP", "weight 8 (configured 1), effective 2"},
		{cluster.ServerState{State: "DOWN", Admin: "READY", Weight: 0, ConfiguredWeight: 4, WeightOverride: -1},
			"DOWN", "weight 4 (configured), effective 0"},
	} {
		if got := describeState(tc.st); got != tc.state {
			t.Errorf("describeState(%+v) = %q, want %q", tc.st, got, tc.state)
		}
		if got := describeWeight(tc.st); got != tc.weightLine {
			t.Errorf("describeWeight(%+v) = %q, want %q", tc.st, got, tc.weightLine)
		}
	}
}

// TestAgentCommand runs `fulcrum agent` in-process and drives it with the
// other commands over its admin socket.
func TestAgentCommand(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "fulcrum-cli") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	lb := writeFile(t, filepath.Join(dir, "lb.yaml"), "backends: [{name: app, servers: [{name: app1, address: '127.0.0.1:9001'}]}]\n")
	node := writeFile(t, filepath.Join(dir, "node.yaml"), "node: {name: clinode}\nadmin: {socket: run/admin.sock}\nproxy_config: lb.yaml\nlog: {level: debug}\n")
	sock := filepath.Join(dir, "run", "admin.sock")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var agentErr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"agent", "--config", node}, io.Discard, &agentErr) }()

	client := cluster.NewAdminClient(sock)
	defer client.Close()
	waitFor(t, "the agent's health", func() bool {
		hctx, hcancel := context.WithTimeout(ctx, time.Second)
		defer hcancel()
		h, err := client.Health(hctx)
		return err == nil && h.Node == "clinode" && h.Version == version
	})

	if code, out, errOut := runCLI(t, "--config", node, "stats"); code != 0 || !strings.HasPrefix(out, "pxname") {
		t.Errorf("stats: exit %d %q %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, "--socket", sock, "stats", "--json"); code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("stats --json: exit %d %q", code, out)
	}
	if code, out, errOut := runCLI(t, "--config", node, "reload"); code != 0 || out != "proxy config reloaded\n" {
		t.Errorf("reload: exit %d %q %q", code, out, errOut)
	}

	for _, tc := range []struct {
		args []string
		out  string
	}{
		{[]string{"server", "disable", "app/app1"}, "app/app1: MAINT\n"},
		{[]string{"server", "drain", "app/app1"}, "app/app1: DRAIN\n"},
		{[]string{"server", "enable", "app/app1"}, "app/app1: UP\n"},
		{[]string{"server", "weight", "app/app1", "7"}, "app/app1: weight 7 (configured 1)\n"},
		{[]string{"server", "weight", "4", "app/app1"}, "app/app1: weight 4 (configured 1)\n"},
		{[]string{"server", "weight", "app/app1", "reset"}, "app/app1: weight 1 (configured)\n"},
	} {
		if code, out, errOut := runCLI(t, append([]string{"--config", node}, tc.args...)...); code != 0 || out != tc.out {
			t.Errorf("%v: exit %d %q %q, want %q", tc.args, code, out, errOut, tc.out)
		}
	}
	code, out, errOut := runCLI(t, "--socket", sock, "server", "drain", "app/app1", "--json")
	var st cluster.ServerState
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.State != "DRAIN" || st.Admin != "DRAIN" || st.Server != "app1" {
		t.Errorf("drain --json: exit %d %q %q: %+v %v", code, out, errOut, st, err)
	}
	code, out, errOut = runCLI(t, "--socket", sock, "server", "enable", "app/nope")
	if code != 1 || out != "" || errOut != "fulcrum: app/nope: no server \"nope\" in backend \"app\"\n" {
		t.Errorf("unknown server: exit %d %q %q", code, out, errOut)
	}
	code, _, errOut = runCLI(t, "--socket", sock, "server", "weight", "web/app1", "2")
	if code != 1 || errOut != "fulcrum: web/app1: no backend \"web\" in the running config\n" {
		t.Errorf("unknown backend: exit %d %q", code, errOut)
	}
	runCLI(t, "--socket", sock, "server", "enable", "app/app1")

	writeFile(t, lb, "backends: [{name: app, servers: [{name: app1, address: '10.0.0.1'}]}]\n")
	code, _, errOut = runCLI(t, "--config", node, "reload")
	if code != 1 || !strings.HasPrefix(errOut, "backends[0].servers[0].address: missing port\nfulcrum: reload: ") {
		t.Errorf("invalid reload: exit %d %q", code, errOut)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("agent exit %d:\n%s", code, agentErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if log := agentErr.String(); !strings.Contains(log, `msg="proxy config fault"`) || !strings.Contains(log, "path=backends[0].servers[0].address") {
		t.Errorf("agent log lacks the fault line:\n%s", log)
	}
}

func TestAgentCommandStartupFaults(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "agent", "--config", filepath.Join(dir, "absent.yaml"))
	if code != 1 || !strings.HasPrefix(errOut, "fulcrum: node config ") {
		t.Errorf("missing node config: exit %d %q", code, errOut)
	}

	node := writeFile(t, filepath.Join(dir, "node.yaml"), "admin: {socket: ''}\nlog: {level: loud}\n")
	code, _, errOut = runCLI(t, "agent", "--config", node)
	if code != 1 || !strings.Contains(errOut, "has 2 fault(s):\n  admin.socket: missing\n  log.level: ") {
		t.Errorf("invalid node config: exit %d %q", code, errOut)
	}

	writeFile(t, filepath.Join(dir, "lb.yaml"), badConfig)
	node = writeFile(t, node, "admin: {socket: admin.sock}\nproxy_config: lb.yaml\nlog: {level: error}\n")
	code, _, errOut = runCLI(t, "agent", "--config", node)
	if code != 1 || !strings.Contains(errOut, "has 2 fault(s):") || !strings.Contains(errOut, "\n  backends[1].servers[0].address: missing port") {
		t.Errorf("invalid proxy config: exit %d %q", code, errOut)
	}
}

func TestDemoBackend(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo-backend", "--listen", "127.0.0.1:0", "--name", "b1"}, io.Discard, &errOut)
	}()
	re := regexp.MustCompile(`listening on (\S+)`)
	waitFor(t, "the demo backend to listen", func() bool { return re.MatchString(errOut.String()) })
	addr := re.FindStringSubmatch(errOut.String())[1]

	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for path, want := range map[string]string{"/": "b1\n", "/any/path?q=1": "b1\n", "/healthz": "ok"} {
		resp, err := hc.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s: %d %q %v", path, resp.StatusCode, body, resp.Header)
		}
	}
	hc.CloseIdleConnections()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("demo-backend did not stop")
	}
}
