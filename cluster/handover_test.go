package cluster

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/proxy"
	"github.com/fulcrum-lb/fulcrum/state"
)

// TestFinishWaitsForOpenConnectionsBounded: a planned hand-over waits for
// the connections the engine has (here one with a request begun), but no
// longer than vip.handover_timeout, and goes on at once when they close.
func TestFinishWaitsForOpenConnectionsBounded(t *testing.T) {
	cfg, err := state.Parse([]byte(`
frontends: [{name: web, bind: ["127.0.0.1:0"], default_backend: app}]
backends: [{name: app, servers: [{name: s, address: "127.0.0.1:9"}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	e := proxy.New(slog.New(slog.DiscardHandler))
	if err := e.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	var addr string
	for _, a := range e.Addrs() {
		addr = a.String()
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\n") // a head still coming
	waitUntil(t, 2*time.Second, "the engine to hold the connection", func() bool { return !e.Idle() })

	start := time.Now()
	finish(context.Background(), e, 300*time.Millisecond)
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("with a connection open, finish returned after %v, want the 300ms timeout", took)
	}

	go func() {
		time.Sleep(200 * time.Millisecond) // the workload: the client goes away
		c.Close()
	}()
	start = time.Now()
	finish(context.Background(), e, 5*time.Second)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("finish returned %v after the connection closed, want soon after it", took)
	}
}

// TestSlogWriterKeepsLevels: Raft's and memberlist's "[LEVEL] text" lines
// become slog records of that level, without the prefix.
func TestSlogWriterKeepsLevels(t *testing.T) {
	var out bytes.Buffer
	w := slogWriter{slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=x\n",
		"[WARN]  raft: heartbeat timeout reached\n",
		"[ERR] memberlist: failed\n",
		"[INFO]  raft: entering follower state\n",
		"no prefix at all\n",
	} {
		w.Write([]byte(line))
	}
	got := out.String()
	for _, want := range []string{
		`level=DEBUG msg="memberlist: Stream connection from=x"`,
		`level=WARN msg="raft: heartbeat timeout reached"`,
		`level=ERROR msg="memberlist: failed"`,
		`level=INFO msg="raft: entering follower state"`,
		`level=INFO msg="no prefix at all"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %s:\n%s", want, got)
		}
	}
}
