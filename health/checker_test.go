package health

import (
	"bufio"
	"context"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fulcrum-lb/fulcrum/state"
)

// checkerFor builds the checker of a server at addr from a health_check
// document, through the config layer.
func checkerFor(t *testing.T, addr, check string, o CheckerOptions) Checker {
	t.Helper()
	c := mustParse(t, "backends: [{name: b, health_check: "+check+", servers: [{name: s, address: \""+addr+"\", check: true}]}]")
	hc, _ := state.ServerCheck(&c.Backends[0], &c.Backends[0].Servers[0])
	ch, err := NewChecker(&c.Backends[0].Servers[0], &hc, o)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func runCheck(c Checker, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Check(ctx)
}

func wantResult(t *testing.T, name string, r Result, ok bool, st Status, code int) {
	t.Helper()
	if r.OK != ok || r.Status != st || r.Code != code {
		t.Errorf("%s: got %+v, want ok=%v status=%s code=%d", name, r, ok, st, code)
	}
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// serveTCP runs handle for every connection until the test ends.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func TestTCPChecker(t *testing.T) {
	plain := serveTCP(t, func(net.Conn) {})
	wantResult(t, "connect", runCheck(checkerFor(t, plain, "{type: tcp}", CheckerOptions{}), time.Second), true, StatusL4OK, 0)
	r := runCheck(checkerFor(t, freeAddr(t), "{type: tcp}", CheckerOptions{}), time.Second)
	wantResult(t, "refused", r, false, StatusL4Con, 0)
	if r.Reason != "Layer4 connection problem" || !strings.Contains(r.Detail, "refused") {
		t.Errorf("refused: reason %q detail %q", r.Reason, r.Detail)
	}

	redis := serveTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			switch line {
			case "PING\r\n":
				c.Write([]byte("+PO"))
				c.Write([]byte("NG\r\n"))
			case "INFO\r\n":
				c.Write([]byte("role:master\r\n"))
			case "QUIT\r\n":
				c.Write([]byte("bye\r\n"))
				return
			}
		}
	})
	wantResult(t, "send/expect", runCheck(checkerFor(t, redis, "{type: tcp, tcp_send: [PING, INFO], tcp_expect: [+PONG, role:master]}", CheckerOptions{}), time.Second), true, StatusL7OK, 0)
	wantResult(t, "wrong reply", runCheck(checkerFor(t, redis, "{type: tcp, tcp_send: [QUIT], tcp_expect: [+PONG]}", CheckerOptions{}), time.Second), false, StatusL7Rsp, 0)
	// Nothing sent: the server never answers.
	start := time.Now()
	wantResult(t, "silent", runCheck(checkerFor(t, redis, "{type: tcp, tcp_expect: [+PONG]}", CheckerOptions{}), 100*time.Millisecond), false, StatusL7Tout, 0)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout took %v", d)
	}
	// An endless stream without the expected string stops at MaxBody.
	chatty := serveTCP(t, func(c net.Conn) {
		buf := []byte(strings.Repeat("x", 4096))
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	wantResult(t, "unbounded", runCheck(checkerFor(t, chatty, "{type: tcp, tcp_expect: [never]}", CheckerOptions{}), 5*time.Second), false, StatusL7Rsp, 0)
}

func testHTTPServer(t *testing.T, tls bool) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("all ok\n")) })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) })
	mux.HandleFunc("/wrong", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("all bad\n")) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1<<20) + "ok"))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "app.example" || r.Header.Get("X-Check") != "yes" || r.Method != "HEAD" {
			w.WriteHeader(http.StatusBadRequest)
		}
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPChecker(t *testing.T) {
	srv := testHTTPServer(t, false)
	addr := srv.Listener.Addr().String()
	o := CheckerOptions{}
	check := func(doc string) Result { return runCheck(checkerFor(t, addr, doc, o), time.Second) }
	wantResult(t, "ok", check("{type: http, path: /ok, expect_body: ok}"), true, StatusL7OK, 200)
	r := check("{type: http, path: /fail}")
	wantResult(t, "503", r, false, StatusL7Sts, 503)
	if r.Reason != "Layer7 wrong status" {
		t.Errorf("reason %q", r.Reason)
	}
	wantResult(t, "503 expected", check(`{type: http, path: /fail, expect_status: [200, 503]}`), true, StatusL7OK, 503)
	wantResult(t, "404", check(`{type: http, path: /nope, expect_status: "200-299"}`), false, StatusL7Sts, 404)
	wantResult(t, "wrong body", check("{type: http, path: /wrong, expect_body: ok}"), false, StatusL7Rsp, 200)
	wantResult(t, "regex", check(`{type: http, path: /ok, expect_body: "^all (ok|good)\\s*$", expect_body_regex: true}`), true, StatusL7OK, 200)
	wantResult(t, "regex miss", check(`{type: http, path: /wrong, expect_body: "^all (ok|good)$", expect_body_regex: true}`), false, StatusL7Rsp, 200)
	wantResult(t, "headers", check(`{type: http, method: HEAD, path: /echo, host: app.example, headers: {X-Check: "yes"}}`), true, StatusL7OK, 200)
	start := time.Now()
	wantResult(t, "big body", check("{type: http, path: /big, expect_body: ok}"), false, StatusL7Rsp, 200)
	wantResult(t, "slow", runCheck(checkerFor(t, addr, "{type: http, path: /slow}", o), 100*time.Millisecond), false, StatusL7Tout, 0)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("bounded checks took %v", d)
	}
	wantResult(t, "refused", runCheck(checkerFor(t, freeAddr(t), "{type: http}", o), time.Second), false, StatusL4Con, 0)
	garbage := serveTCP(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH\r\n")) })
	wantResult(t, "not http", runCheck(checkerFor(t, garbage, "{type: http}", o), time.Second), false, StatusL7Rsp, 0)
}

func TestTLSAndHTTPSCheckers(t *testing.T) {
	srv := testHTTPServer(t, true)
	addr := srv.Listener.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	trusted := CheckerOptions{RootCAs: pool}
	check := func(doc string, o CheckerOptions) Result { return runCheck(checkerFor(t, addr, doc, o), 2*time.Second) }

	wantResult(t, "https", check("{type: http, https: true, path: /ok}", trusted), true, StatusL7OK, 200)
	wantResult(t, "https sni", check("{type: http, https: true, path: /ok, tls_server_name: example.com}", trusted), true, StatusL7OK, 200)
	wantResult(t, "https untrusted", check("{type: http, https: true, path: /ok}", CheckerOptions{}), false, StatusL6Rsp, 0)
	wantResult(t, "https no verify", check("{type: http, https: true, tls_verify: false, path: /fail}", CheckerOptions{}), false, StatusL7Sts, 503)
	wantResult(t, "tls", check("{type: tls}", trusted), true, StatusL6OK, 0)
	wantResult(t, "tls wrong name", check("{type: tls, tls_server_name: other.test}", trusted), false, StatusL6Rsp, 0)
	wantResult(t, "tls no verify", check("{type: tls, tls_verify: false}", CheckerOptions{}), true, StatusL6OK, 0)
	plain := testHTTPServer(t, false).Listener.Addr().String()
	wantResult(t, "tls to plain", runCheck(checkerFor(t, plain, "{type: tls, tls_verify: false}", CheckerOptions{}), 2*time.Second), false, StatusL6Rsp, 0)
}

func TestAgentChecker(t *testing.T) {
	reply := make(chan string, 10)
	addr := serveTCP(t, func(c net.Conn) { c.Write([]byte(<-reply)) })
	ch := checkerFor(t, addr, "{type: agent}", CheckerOptions{})
	for line, want := range map[string]struct {
		ok    bool
		reply AgentReply
	}{
		"up 75%\n":      {true, AgentReply{Up: true, Admin: AdminReady, WeightPct: 75}},
		"drain":         {true, AgentReply{Admin: AdminDrain, SetAdmin: true, WeightPct: -1}},
		"down#broken\n": {false, AgentReply{Down: true, WeightPct: -1, Reason: "broken"}},
	} {
		reply <- line
		r := runCheck(ch, time.Second)
		if r.OK != want.ok || r.Agent == nil || *r.Agent != want.reply {
			t.Errorf("agent %q: %+v (%+v)", line, r, r.Agent)
		}
	}
	reply <- strings.Repeat("x", 5000)
	if r := runCheck(ch, time.Second); r.OK {
		t.Errorf("overlong agent line accepted: %+v", r)
	}
	wantResult(t, "agent refused", runCheck(checkerFor(t, freeAddr(t), "{type: agent}", CheckerOptions{}), time.Second), false, StatusL4Con, 0)
}
