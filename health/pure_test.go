package health

import (
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

func TestTrackerRiseFall(t *testing.T) {
	tr := NewTracker(2, 3, false)
	if tr.Up() || tr.Success() != NoChange || tr.Success() != WentUp || !tr.Up() || tr.Health() != 4 {
		t.Fatalf("rise 2 from down: %+v", tr)
	}
	for i := 1; i <= 3; i++ {
		got := tr.Failure()
		if want := map[bool]Transition{true: WentDown, false: NoChange}[i == 3]; got != want {
			t.Fatalf("failure %d: %v, want %v", i, got, want)
		}
	}
	if tr.Failure() != NoChange || tr.Health() != 0 {
		t.Fatalf("failure while down: %+v", tr)
	}
	// A success then a failure while down goes back to zero.
	tr.Success()
	tr.Failure()
	if tr.Health() != 0 || tr.Up() {
		t.Fatalf("partial rise not reset: %+v", tr)
	}
}

func TestTrackerNoFlapOneInThree(t *testing.T) {
	tr := NewTracker(2, 3, false)
	tr.Success()
	tr.Success()
	for i := range 30 {
		var got Transition
		if i%3 == 0 {
			got = tr.Failure()
		} else {
			got = tr.Success()
		}
		if got != NoChange {
			t.Fatalf("check %d flapped: %v", i, got)
		}
	}
	if !tr.Up() {
		t.Fatal("down")
	}
}

func TestTrackerInitUpAndActions(t *testing.T) {
	tr := NewTracker(2, 3, true)
	if !tr.Up() || !tr.Transitioning() {
		t.Fatalf("init up: %+v", tr)
	}
	if tr.Failure() != WentDown {
		t.Fatal("init up must go down at the first failure, as HAProxy")
	}
	tr = NewTracker(2, 3, false)
	tr.Success()
	tr.Success()
	if tr.SuddenDeath() != NoChange || !tr.Up() {
		t.Fatal("sudden death from full health must leave it up")
	}
	if tr.Failure() != WentDown {
		t.Fatal("one failure after sudden death must down it")
	}
	tr.Success()
	tr.Success()
	if tr.ForceDown() != WentDown || tr.ForceDown() != NoChange {
		t.Fatal("force down")
	}
	tr.Success()
	tr.Success()
	tr.Reconfigure(5, 5)
	if !tr.Up() || tr.Health() != 9 || tr.Rise() != 5 {
		t.Fatalf("reconfigure: %+v", tr)
	}
}

func TestTrackerNext(t *testing.T) {
	iv := Intervals{Inter: time.Second, Fast: 100 * time.Millisecond, Down: 5 * time.Second}
	tr := NewTracker(2, 3, false)
	if got := tr.Next(iv); got != iv.Down {
		t.Errorf("down: %v", got)
	}
	tr.Success()
	if got := tr.Next(iv); got != iv.Fast {
		t.Errorf("rising: %v", got)
	}
	tr.Success()
	if got := tr.Next(iv); got != iv.Inter {
		t.Errorf("up: %v", got)
	}
	tr.Failure()
	if got := tr.Next(iv); got != iv.Fast {
		t.Errorf("falling: %v", got)
	}
	if got := tr.Next(Intervals{Inter: time.Second}); got != time.Second {
		t.Errorf("no fastinter: %v", got)
	}
}

func TestPassiveDecay(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := Passive{Limit: 4, Period: time.Second}
	for i := range 3 {
		if p.Error(t0) {
			t.Fatalf("tripped at error %d", i+1)
		}
	}
	if !p.Error(t0) || p.Count(t0) != 0 {
		t.Fatal("4 errors at once must trip and restart the count")
	}
	p.Error(t0)
	p.Error(t0)
	p.Error(t0) // 3
	if got := p.Count(t0.Add(time.Second)); got != 1 {
		t.Fatalf("after one period: %d, want 1 (halved)", got)
	}
	if got := p.Count(t0.Add(3 * time.Second)); got != 0 {
		t.Fatalf("after three periods: %d", got)
	}
	// Steady: 1 error per period never trips a limit of 4.
	p = Passive{Limit: 4, Period: time.Second}
	for i := range 100 {
		if p.Error(t0.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("one error a period tripped at %d", i)
		}
	}
	for code, want := range map[int]bool{500: true, 502: true, 503: true, 501: false, 505: false, 404: false, 200: false} {
		if IsL7Error(code) != want {
			t.Errorf("IsL7Error(%d) = %v", code, !want)
		}
	}
}

func TestSlowstartWeight(t *testing.T) {
	w := 100
	win := 10 * time.Second
	for since, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, 2500 * time.Millisecond: 25, 5 * time.Second: 50, 9999 * time.Millisecond: 100, win: 100, time.Hour: 100, -time.Second: 1} {
		if got := SlowstartWeight(w, since, win); got != want {
			t.Errorf("SlowstartWeight(100, %v) = %d, want %d", since, got, want)
		}
	}
	if SlowstartWeight(0, time.Second, win) != 0 || SlowstartWeight(7, time.Second, 0) != 7 {
		t.Error("weight 0 or no window")
	}
}

func TestParseAgentReply(t *testing.T) {
	for line, want := range map[string]AgentReply{
		"up":                  {Up: true, Admin: AdminReady, WeightPct: -1},
		"down\n":              {Down: true, WeightPct: -1},
		"fail # disk full":    {Down: true, WeightPct: -1, Reason: "disk full"},
		"stopped":             {Down: true, WeightPct: -1},
		"drain":               {Admin: AdminDrain, SetAdmin: true, WeightPct: -1},
		"maint\r\n":           {Admin: AdminMaint, SetAdmin: true, WeightPct: -1},
		"ready,75%":           {Admin: AdminReady, SetAdmin: true, WeightPct: 75},
		"UP 50%  maxconn:10":  {Up: true, Admin: AdminReady, WeightPct: 50},
		"75%":                 {WeightPct: 75},
		"300%":                {WeightPct: -1},
		"":                    {WeightPct: -1},
		"down, drain\t0%":     {Down: true, Admin: AdminDrain, SetAdmin: true, WeightPct: 0},
		"nonsense words here": {WeightPct: -1},
	} {
		if got := ParseAgentReply(line); got != want {
			t.Errorf("ParseAgentReply(%q) = %+v, want %+v", line, got, want)
		}
	}
}

func mustParse(t testing.TB, doc string) *state.Config {
	t.Helper()
	c, err := state.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return c
}

func TestKeyOf(t *testing.T) {
	base := `
backends:
  - name: app
    health_check: {type: http, path: /hz, interval: 2s, rise: 2}
    servers:
      - {name: a, address: "127.0.0.1:80", check: true, weight: 3}
`
	key := func(doc string) Key {
		c := mustParse(t, doc)
		return KeyOf(&c.Backends[0], &c.Backends[0].Servers[0])
	}
	k := key(base)
	if k.Backend != "app" || k.Server != "a" || k.Address != "127.0.0.1:80" || k.Check == "" {
		t.Fatalf("key %+v", k)
	}
	for name, doc := range map[string]string{
		"tuning":            `{type: http, path: /hz, interval: 5s, fast_interval: 1s, rise: 4, fall: 9, timeout: 500ms, observe: layer7, error_limit: 3, init_state: up}`,
		"explicit defaults": `{type: http, path: /hz, method: GET, expect_status: "200-399"}`,
	} {
		if got := key(replaceCheck(base, doc)); got != k {
			t.Errorf("%s changed the key: %+v vs %+v", name, got, k)
		}
	}
	if got := key(replaceWeight(base)); got != k {
		t.Errorf("weight changed the key")
	}
	for name, doc := range map[string]string{
		"path":   `{type: http, path: /other}`,
		"status": `{type: http, path: /hz, expect_status: 200}`,
		"body":   `{type: http, path: /hz, expect_body: ok}`,
		"port":   `{type: http, path: /hz, port: 81}`,
		"type":   `{type: tcp}`,
		"https":  `{type: http, path: /hz, https: true}`,
		"header": `{type: http, path: /hz, headers: {X-A: b}}`,
	} {
		if got := key(replaceCheck(base, doc)); got == k {
			t.Errorf("%s did not change the key", name)
		}
	}
	for name, doc := range map[string]string{
		"address":  replaceOnce(base, "127.0.0.1:80", "127.0.0.1:81"),
		"name":     replaceOnce(base, "name: a,", "name: b,"),
		"check":    replaceOnce(base, "check: true", "check: false"),
		"agent":    replaceOnce(base, "check: true", "check: true, agent_port: 9"),
		"override": replaceOnce(base, "weight: 3", "health_check: {path: /x}"),
	} {
		if got := key(doc); got == k {
			t.Errorf("%s did not change the key", name)
		}
	}
}

func replaceCheck(doc, check string) string {
	return replaceOnce(doc, "{type: http, path: /hz, interval: 2s, rise: 2}", check)
}

func replaceWeight(doc string) string { return replaceOnce(doc, "weight: 3", "weight: 9") }

func replaceOnce(s, old, new string) string {
	out := strings.Replace(s, old, new, 1)
	if out == s {
		panic("no " + old)
	}
	return out
}
