package health

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// ctlServer is an HTTP server the test steers: its status, or a failure
// every failEvery requests, or from request failFrom on.
type ctlServer struct {
	n         atomic.Int64
	status    atomic.Int64
	failEvery atomic.Int64
	failFrom  atomic.Int64
	addr      string
}

func newCtlServer(t *testing.T) *ctlServer {
	s := &ctlServer{}
	s.status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.n.Add(1)
		code := int(s.status.Load())
		if fe := s.failEvery.Load(); fe > 0 && n%fe == 0 {
			code = 500
		}
		if ff := s.failFrom.Load(); ff > 0 && n >= ff {
			code = 500
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	s.addr = srv.Listener.Addr().String()
	return s
}

type harness struct {
	m    *Monitor
	fc   *fakeClock
	rec  *recorder
	logs *logRecorder
}

// newHarness builds a monitor on a fake clock whose first checks come
// 10ms after Start.
func newHarness(t *testing.T, doc string, tweak func(*Options)) *harness {
	t.Helper()
	h := &harness{fc: newFakeClock(), rec: &recorder{}, logs: &logRecorder{}}
	opts := Options{Clock: h.fc, Logger: slog.New(h.logs), Observer: h.rec,
		Spread: func(time.Duration) time.Duration { return 10 * time.Millisecond }}
	if tweak != nil {
		tweak(&opts)
	}
	m, err := New(mustParse(t, doc), opts)
	if err != nil {
		t.Fatal(err)
	}
	h.m, h.rec.m = m, m
	t.Cleanup(func() { m.Close() })
	return h
}

func (h *harness) start(t *testing.T) {
	if err := h.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) hasLog(t *testing.T, want string) {
	t.Helper()
	for _, m := range h.logs.all() {
		if strings.Contains(m, want) {
			return
		}
	}
	t.Errorf("no log line with %q in:\n%s", want, strings.Join(h.logs.all(), "\n"))
}

func appDoc(addr, extra string) string {
	return fmt.Sprintf(`
backends:
  - name: app
    health_check: {type: http, path: /hz, interval: 1s, fast_interval: 200ms, down_interval: 5s, rise: 2, fall: 3%s}
    servers:
      - {name: app1, address: "%s", check: true}
      - {name: app2, address: "127.0.0.1:1"}
`, extra, addr)
}

func TestMonitorFallAndRise(t *testing.T) {
	srv := newCtlServer(t)
	h := newHarness(t, appDoc(srv.addr, ""), nil)
	if h.m.Usable("app", "app1") || h.m.State("app", "app1") != StateDown || !h.m.Usable("app", "app2") {
		t.Fatal("initial states: init_state down for checked, UP for unchecked")
	}
	h.start(t)
	h.fc.step(t)
	if h.m.Usable("app", "app1") {
		t.Fatal("UP after one success with rise 2")
	}
	if got := h.fc.nextIn(); got != 200*time.Millisecond {
		t.Errorf("rising: next check in %v, want fast_interval", got)
	}
	h.fc.step(t)
	if !h.m.Usable("app", "app1") || h.m.State("app", "app1") != StateUp {
		t.Fatal("not UP after rise successes")
	}
	if got := h.fc.nextIn(); got != time.Second {
		t.Errorf("up: next check in %v, want interval", got)
	}
	h.hasLog(t, "server app/app1 is UP, reason: Layer7 check passed, code: 200, check duration: ")
	h.hasLog(t, "2 active and 0 backup servers online")

	srv.status.Store(503)
	for i := 1; i <= 2; i++ {
		h.fc.step(t)
		if !h.m.Usable("app", "app1") {
			t.Fatalf("DOWN after %d failures with fall 3", i)
		}
		if got := h.fc.nextIn(); got != 200*time.Millisecond {
			t.Errorf("falling: next check in %v, want fast_interval", got)
		}
	}
	h.fc.step(t)
	if h.m.Usable("app", "app1") || h.m.State("app", "app1") != StateDown {
		t.Fatal("not DOWN after fall failures")
	}
	if n := srv.n.Load(); n != 5 {
		t.Errorf("server saw %d checks, want 5 (2 up + 3 down)", n)
	}
	if got := h.fc.nextIn(); got != 5*time.Second {
		t.Errorf("down: next check in %v, want down_interval", got)
	}
	h.hasLog(t, "server app/app1 is DOWN, reason: Layer7 wrong status, code: 503, check duration: ")
	h.hasLog(t, ", 1 active and 0 backup servers left")
	st, _ := h.m.Status("app", "app1")
	if st.ChkFail != 3 || st.ChkDown != 1 || st.Last.Status != StatusL7Sts || st.Health != 0 || st.LocalUp || st.CheckType != "http" {
		t.Errorf("status %+v", st)
	}

	srv.status.Store(200)
	h.fc.step(t)
	h.fc.step(t)
	if !h.m.Usable("app", "app1") {
		t.Fatal("not back UP after rise successes")
	}
	if got, want := strings.Join(h.rec.list(), ","), "app/app1 UP,app/app1 DOWN,app/app1 UP"; got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}
}

func TestMonitorNoFlap(t *testing.T) {
	srv := newCtlServer(t)
	h := newHarness(t, appDoc(srv.addr, ""), nil)
	h.start(t)
	h.fc.step(t)
	h.fc.step(t)
	srv.failEvery.Store(3)
	for range 30 {
		h.fc.step(t)
	}
	if got := h.rec.list(); len(got) != 1 || !h.m.Usable("app", "app1") {
		t.Errorf("flapped: %v", got)
	}
	if st, _ := h.m.Status("app", "app1"); st.ChkFail < 9 || st.ChkDown != 0 {
		t.Errorf("status %+v", st)
	}
}

func TestMonitorUpdateKeepsState(t *testing.T) {
	srv := newCtlServer(t)
	h := newHarness(t, appDoc(srv.addr, ""), nil)
	h.start(t)
	h.fc.step(t)
	h.fc.step(t)
	if err := h.m.SetAdmin("app", "app1", AdminDrain); err != nil {
		t.Fatal(err)
	}
	if h.m.Usable("app", "app1") || h.m.State("app", "app1") != StateDrain {
		t.Fatal("drain is not usable")
	}
	h.m.SetAdmin("app", "app1", AdminReady)

	// Timing, rise/fall and weight change: the state stays.
	tuned := strings.Replace(appDoc(srv.addr, ""), "interval: 1s", "interval: 2s", 1)
	tuned = strings.Replace(tuned, "check: true}", "check: true, weight: 7}", 1)
	if err := h.m.Update(mustParse(t, tuned)); err != nil {
		t.Fatal(err)
	}
	if !h.m.Usable("app", "app1") || h.m.Weight("app", "app1") != 7 {
		t.Fatalf("state lost on a tuning reload: usable %v weight %d", h.m.Usable("app", "app1"), h.m.Weight("app", "app1"))
	}
	h.fc.step(t)
	if got := h.fc.nextIn(); got != 2*time.Second {
		t.Errorf("new interval not applied: %v", got)
	}
	if st, _ := h.m.Status("app", "app1"); st.Health != 4 {
		t.Errorf("health %d after reload, want full", st.Health)
	}

	// The check changes: the server starts afresh, at init_state, but
	// keeps the operator's admin state. app2 is removed.
	h.m.SetAdmin("app", "app1", AdminDrain)
	changed := strings.Replace(tuned, "path: /hz", "path: /other", 1)
	changed = changed[:strings.Index(changed, "      - {name: app2")]
	if err := h.m.Update(mustParse(t, changed)); err != nil {
		t.Fatal(err)
	}
	if h.m.State("app", "app1") != StateDown {
		t.Errorf("changed check kept the old verdict: %v", h.m.State("app", "app1"))
	}
	if st, _ := h.m.Status("app", "app1"); st.Admin != AdminDrain || st.ChkFail != 0 {
		t.Errorf("after a check change: %+v", st)
	}
	if _, ok := h.m.Status("app", "app2"); ok || h.m.Usable("app", "app2") {
		t.Error("removed server still known")
	}
	// The replaced server's goroutine stops; the new one arms its first
	// check.
	h.fc.waitUntil(t, "one goroutine, for the new check", func() bool {
		p := h.fc.pending()
		return len(p) == 1 && p[0] == 10*time.Millisecond
	})
	h.fc.step(t)
	h.fc.step(t)
	if h.m.State("app", "app1") != StateDrain {
		t.Errorf("after rise on the new check: %v, want DRAIN", h.m.State("app", "app1"))
	}
	// A config that cannot be built changes nothing.
	bad := &state.Config{Backends: []state.Backend{{Name: "x", Servers: []state.Server{{Name: "y", Address: "nope", Check: true}}}}}
	if err := h.m.Update(bad); err == nil {
		t.Error("bad config accepted")
	}
	if _, ok := h.m.Status("app", "app1"); !ok {
		t.Error("failed Update changed the monitor")
	}
}

type panicChecker struct{}

func (panicChecker) Check(context.Context) Result { panic("boom") }

func TestMonitorSurvivesPanickingChecker(t *testing.T) {
	srv := newCtlServer(t)
	doc := fmt.Sprintf(`
backends:
  - name: app
    health_check: {type: http, interval: 1s, rise: 1, fall: 1, init_state: up}
    servers:
      - {name: good, address: "%s", check: true}
      - {name: bad, address: "%s", check: true}
`, srv.addr, srv.addr)
	h := newHarness(t, doc, func(o *Options) {
		o.NewChecker = func(s *state.Server, hc *state.HealthCheck, co CheckerOptions) (Checker, error) {
			if s.Name == "bad" {
				return panicChecker{}, nil
			}
			return NewChecker(s, hc, co)
		}
	})
	h.start(t)
	for range 3 {
		h.fc.stepAll(t, 2)
	}
	if !h.m.Usable("app", "good") || h.m.Usable("app", "bad") {
		t.Fatalf("good %v bad %v", h.m.State("app", "good"), h.m.State("app", "bad"))
	}
	st, _ := h.m.Status("app", "bad")
	if st.Last.Status != StatusIntErr || st.ChkFail != 3 {
		t.Errorf("bad: %+v", st)
	}
	h.hasLog(t, "health check panicked")
	h.hasLog(t, "server app/bad is DOWN, reason: check panicked")
}

// blockingChecker blocks until its context ends.
type blockingChecker struct{ started chan struct{} }

func (b blockingChecker) Check(ctx context.Context) Result {
	b.started <- struct{}{}
	<-ctx.Done()
	return Result{Status: StatusL4Tout, Reason: "Layer4 timeout"}
}

func TestMonitorCancelledCheckIsNotAFailure(t *testing.T) {
	started := make(chan struct{}, 1)
	doc := `backends: [{name: app, health_check: {timeout: 1s, init_state: up, fall: 1}, servers: [{name: a, address: "127.0.0.1:1", check: true}]}]`
	h := newHarness(t, doc, func(o *Options) {
		o.NewChecker = func(*state.Server, *state.HealthCheck, CheckerOptions) (Checker, error) {
			return blockingChecker{started}, nil
		}
	})
	h.start(t)
	h.fc.waitTimers(t, 1)
	h.fc.Advance(h.fc.nextIn())
	<-started
	h.m.Close()
	if st, _ := h.m.Status("app", "a"); st.ChkFail != 0 || !h.m.Usable("app", "a") || len(h.rec.list()) != 0 {
		t.Errorf("a check cancelled by Close was counted: %+v", st)
	}
}

func TestMonitorAgent(t *testing.T) {
	reply := make(chan string, 1)
	agent := serveTCP(t, func(c net.Conn) { c.Write([]byte(<-reply)) })
	_, port, _ := net.SplitHostPort(agent)
	doc := fmt.Sprintf(`backends: [{name: app, servers: [{name: a, address: "127.0.0.1:1", weight: 10, agent_port: %s, agent_interval: 3s}]}]`, port)
	h := newHarness(t, doc, nil)
	h.start(t)
	steps := []struct {
		reply  string
		state  State
		weight int
	}{
		{"drain\n", StateDrain, 10},
		{"ready 50%\n", StateUp, 5},
		{"maint\n", StateMaint, 5},
		{"up\n", StateMaint, 5}, // "up" is operational only: MAINT stays
		{"ready up\n", StateUp, 5},
		{"down # disk full\n", StateDown, 5},
		{"75%\n", StateDown, 8},
		{"up 100%\n", StateUp, 10},
		{"0%\n", StateUp, 0},
	}
	for _, s := range steps {
		reply <- s.reply
		h.fc.step(t)
		if got := h.m.State("app", "a"); got != s.state {
			t.Errorf("after %q: state %v, want %v", s.reply, got, s.state)
		}
		if got := h.m.Weight("app", "a"); got != s.weight {
			t.Errorf("after %q: weight %d, want %d", s.reply, got, s.weight)
		}
	}
	if got := h.fc.nextIn(); got != 3*time.Second {
		t.Errorf("agent interval %v", got)
	}
	if got, want := strings.Join(h.rec.list(), ","), "app/a DOWN,app/a UP"; got != want {
		t.Errorf("transitions %s, want %s", got, want)
	}
	h.hasLog(t, "server app/a is DOWN, reason: agent reports down")
	h.hasLog(t, "server app/a is going to DRAIN mode (by agent)")
	// The operator's MAINT is not lifted by the agent's "up".
	h.m.SetAdmin("app", "a", AdminMaint)
	reply <- "up 100%\n"
	h.fc.step(t)
	if got := h.m.State("app", "a"); got != StateMaint {
		t.Errorf("agent lifted the operator's maint: %v", got)
	}
}

func TestMonitorPassive(t *testing.T) {
	srv := newCtlServer(t)
	for _, tc := range []struct {
		onError string
		upAfter bool // still UP right after the limit is reached
	}{
		{"mark-down", false},
		{"sudden-death", true},
		{"fail-check", true},
		{"fastinter", true},
	} {
		t.Run(tc.onError, func(t *testing.T) {
			h := newHarness(t, appDoc(srv.addr, ", observe: layer7, error_limit: 3, on_error: "+tc.onError), nil)
			h.start(t)
			h.fc.step(t)
			h.fc.step(t)
			for range 20 {
				h.m.ObserveL7("app", "app1", 200)
				h.m.ObserveL4("app", "app1", true)
				h.m.ObserveL7("app", "app1", 501)
			}
			h.m.ObserveL7("app", "app1", 503)
			h.m.ObserveL4("app", "app1", false)
			if !h.m.Usable("app", "app1") {
				t.Fatal("DOWN below error_limit")
			}
			h.m.ObserveL7("app", "app1", 502)
			if got := h.m.Usable("app", "app1"); got != tc.upAfter {
				t.Fatalf("usable %v right after the limit", got)
			}
			// Every action reschedules the next check at fast_interval
			// (mark-down: the server is down, so down_interval).
			// (mark-down: the server is down, and down_interval is longer
			// than the check already scheduled, which stays.)
			want := 200 * time.Millisecond
			if tc.onError == "mark-down" {
				want = time.Second
			}
			h.fc.waitUntil(t, "a rescheduled check", func() bool { return h.fc.nextIn() == want })
			switch tc.onError {
			case "mark-down":
				h.hasLog(t, "server app/app1 is DOWN, reason: Health analyze, info: \"3 errors, last: HTTP status 502, on_error mark-down\", code: 502, 1 active")
				// Stats must say why: the passive verdict is the last check.
				if st, _ := h.m.Status("app", "app1"); st.Last.Status != StatusHana {
					t.Errorf("last check after a passive mark-down: %s, want %s", st.Last.Status, StatusHana)
				}
			case "sudden-death":
				srv.status.Store(503)
				h.fc.step(t)
				srv.status.Store(200)
				if h.m.Usable("app", "app1") {
					t.Error("sudden-death: one failed check after it must down the server")
				}
			}
		})
	}
}

func TestMonitorSlowstartAndWeights(t *testing.T) {
	doc := `backends: [{name: app, servers: [{name: a, address: "127.0.0.1:1", weight: 100, slowstart: 10s}]}]`
	h := newHarness(t, doc, nil)
	if got := h.m.Weight("app", "a"); got != 100 {
		t.Errorf("no ramp at start-up (HAProxy): %d", got)
	}
	h.m.SetVerdict("app", "a", false)
	h.m.SetVerdict("app", "a", true)
	for _, s := range []struct {
		advance time.Duration
		want    int
	}{{0, 1}, {2500 * time.Millisecond, 25}, {2500 * time.Millisecond, 50}, {5 * time.Second, 100}, {time.Hour, 100}} {
		h.fc.Advance(s.advance)
		if got := h.m.Weight("app", "a"); got != s.want {
			t.Errorf("at +%v: weight %d, want %d", s.advance, got, s.want)
		}
	}
	h.m.SetAdmin("app", "a", AdminMaint)
	h.fc.Advance(time.Minute)
	h.m.SetAdmin("app", "a", AdminReady)
	if got := h.m.Weight("app", "a"); got != 1 {
		t.Errorf("leaving maint: weight %d, want a new ramp", got)
	}
	h.fc.Advance(10 * time.Second)
	if err := h.m.SetWeight("app", "a", 40); err != nil || h.m.Weight("app", "a") != 40 {
		t.Errorf("runtime weight: %v %d", err, h.m.Weight("app", "a"))
	}
	h.m.SetWeight("app", "a", -1)
	if h.m.Weight("app", "a") != 100 {
		t.Error("weight not reset")
	}
	if h.m.SetWeight("app", "a", 257) == nil || h.m.SetWeight("app", "zz", 1) == nil || h.m.SetAdmin("zz", "a", AdminMaint) == nil {
		t.Error("bad SetWeight/SetAdmin accepted")
	}
	if h.m.Usable("app", "nope") || h.m.Weight("nope", "a") != 0 || h.m.State("app", "nope") != StateDown {
		t.Error("unknown server must not be usable")
	}
}

func TestVerdictHotPathAllocatesNothing(t *testing.T) {
	doc := `backends: [{name: app, servers: [{name: a, address: "127.0.0.1:1", slowstart: 10s}, {name: b, address: "127.0.0.1:2"}]}]`
	h := newHarness(t, doc, nil)
	h.m.SetVerdict("app", "a", false)
	h.m.SetVerdict("app", "a", true) // ramping: Weight reads the clock
	var v Verdicts = NewLocal(h.m)
	if n := testing.AllocsPerRun(1000, func() {
		_ = v.Usable("app", "a")
		_ = v.Weight("app", "a")
		_ = v.State("app", "b")
		h.m.ObserveL7("app", "a", 200)
		h.m.ObserveL4("app", "b", true)
	}); n != 0 {
		t.Errorf("hot path allocates %v times per call", n)
	}
}

func BenchmarkVerdicts(b *testing.B) {
	c, _ := state.Parse([]byte(`backends: [{name: app, servers: [{name: a, address: "127.0.0.1:1"}]}]`))
	m, _ := New(c, Options{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !m.Usable("app", "a") || m.Weight("app", "a") != 1 {
				b.Fatal("not usable")
			}
		}
	})
}

func TestMonitorSpreadsAndBoundsChecks(t *testing.T) {
	var b strings.Builder
	b.WriteString("backends: [{name: app, health_check: {interval: 10s, init_state: up}, servers: [")
	for i := range 20 {
		fmt.Fprintf(&b, "{name: s%d, address: \"127.0.0.1:1\", check: true},", i)
	}
	b.WriteString("]}]")
	var active, peak, done atomic.Int64
	release := make(chan struct{})
	h := newHarness(t, b.String(), func(o *Options) {
		o.Spread = nil // the default: random within the interval
		o.MaxConcurrent = 3
		o.NewChecker = func(*state.Server, *state.HealthCheck, CheckerOptions) (Checker, error) {
			return checkFunc(func(ctx context.Context) Result {
				n := active.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				active.Add(-1)
				done.Add(1)
				return Result{OK: true}
			}), nil
		}
	})
	h.start(t)
	h.fc.waitTimers(t, 20)
	delays := h.fc.pending()
	distinct := map[time.Duration]bool{}
	for _, d := range delays {
		if d < 0 || d >= 10*time.Second {
			t.Errorf("first check in %v, outside the interval", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Errorf("first checks not spread: %v", delays)
	}
	h.fc.Advance(10 * time.Second) // every first check is due at once
	for range 20 {
		release <- struct{}{}
	}
	h.fc.waitTimers(t, 20)
	if done.Load() != 20 || peak.Load() > 3 {
		t.Errorf("done %d, peak concurrency %d (max 3)", done.Load(), peak.Load())
	}
}

type checkFunc func(ctx context.Context) Result

func (f checkFunc) Check(ctx context.Context) Result { return f(ctx) }

// The one real-time test: real clock, real server, short intervals.
// Detection after exactly fall failures, recovery after rise, and Close
// stops every goroutine.
func TestMonitorRealTime(t *testing.T) {
	before := runtime.NumGoroutine()
	srv := newCtlServer(t)
	doc := fmt.Sprintf(`
backends:
  - name: app
    health_check: {type: http, interval: 20ms, timeout: 20ms, rise: 2, fall: 3}
    servers:
      - {name: a, address: "%s", check: true}
      - {name: b, address: "%s", check: true, agent_port: 1}
`, srv.addr, freeAddr(t))
	rec := &recorder{ch: make(chan string, 16)}
	var atDown atomic.Int64
	var mu sync.Mutex
	rec.hook = func(backend, server string, up bool) {
		mu.Lock()
		defer mu.Unlock()
		if server == "a" && !up {
			atDown.Store(srv.n.Load())
		}
	}
	m, err := New(mustParse(t, doc), Options{Observer: rec, Logger: slog.New(&logRecorder{})})
	if err != nil {
		t.Fatal(err)
	}
	rec.m = m
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait := func(want string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev := <-rec.ch:
				if ev == want {
					return
				}
			case <-timeout:
				t.Fatalf("no %s", want)
			}
		}
	}
	wait("app/a UP")
	srv.failFrom.Store(srv.n.Load() + 1)
	wait("app/a DOWN")
	if got, want := atDown.Load(), srv.failFrom.Load()+2; got != want {
		t.Errorf("DOWN at request %d, want %d (exactly fall failures)", got, want)
	}
	srv.failFrom.Store(0)
	wait("app/a UP")
	if m.Usable("app", "b") {
		t.Error("refusing server b usable")
	}
	m.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 { // the test server's own
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines left after Close: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
	}
}
