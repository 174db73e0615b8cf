package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// badServer answers every request with reply and then waits for the proxy
// to close the connection.
func badServer(t *testing.T, reply string) *rawServer {
	return startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequestHead(br); err != nil {
			return
		}
		if reply != "" {
			io.WriteString(c, reply)
		}
		io.Copy(io.Discard, br) // until the proxy closes
	})
}

// TestServerErrors checks 502 for malformed responses, 504 for a silent
// server, 503 when no server can be reached, and the counters of each.
func TestServerErrors(t *testing.T) {
	garbage := badServer(t, "HELLO WORLD\r\n\r\n")
	dupCL := badServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
	badCL := badServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello")
	clTE := badServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	silent := badServer(t, "")
	closer := startRawServer(t, func(c net.Conn) {
		readRequestHead(bufio.NewReader(c)) // then close without a word
	})
	dead := refusingAddr(t)
	servers := map[string]string{
		"garbage": garbage.addr, "dupcl": dupCL.addr, "badcl": badCL.addr, "clte": clTE.addr,
		"silent": silent.addr, "closer": closer.addr, "dead": dead,
	}

	cases := []struct {
		name   string
		status int
		eresp  int64
		econ   int64
		slow   time.Duration // minimum time to the answer
	}{
		{"garbage", 502, 1, 0, 0},
		{"dupcl", 502, 1, 0, 0},
		{"badcl", 502, 1, 0, 0},
		{"clte", 502, 1, 0, 0},
		{"silent", 504, 1, 0, 250 * time.Millisecond},
		{"closer", 502, 1, 0, 0},
		{"dead", 503, 0, 2, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, retries: 1, timeouts: {connect: 1s, server: 300ms}}
frontends:
  - {name: %[1]s, bind: ["127.0.0.1:0"], default_backend: %[1]s}
backends:
  - {name: %[1]s, servers: [{name: s, address: %[2]q}]}
`, tc.name, servers[tc.name]))
			c := dialProxy(t, addr)
			start := time.Now()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("no status line: %v", err)
			}
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.status); len(line) < len(want) || line[:len(want)] != want {
				t.Errorf("status line %q, want %q...", line, want)
			}
			if d := time.Since(start); d < tc.slow {
				t.Errorf("answered after %v, want at least %v (timeout server)", d, tc.slow)
			}
			// The rest of the error page, then the close.
			for range 100 {
				l, err := br.ReadString('\n')
				if err != nil || l == "\r\n" {
					break
				}
			}
			io.Copy(io.Discard, io.LimitReader(br, 4096))
			expectClosed(t, c, br)

			eventually(t, 2*time.Second, func() string {
				fs := frontendStats(t, e, tc.name)
				bs := backendStats(t, e, tc.name)
				ss := serverStats(t, e, tc.name, "s")
				srv5xx := int64(0)
				if tc.status != 503 {
					srv5xx = 1 // the server's own bad answer
				}
				if fs.Resp5xx != 1 || bs.RespErrors != tc.eresp || bs.ConnErrors != tc.econ || bs.Resp5xx != 1 ||
					ss.RespErrors != tc.eresp || ss.ConnErrors != tc.econ || ss.Resp5xx != srv5xx {
					return fmt.Sprintf("frontend hrsp_5xx=%d; backend eresp=%d econ=%d hrsp_5xx=%d; server eresp=%d econ=%d hrsp_5xx=%d; "+
						"want 1; %d %d 1; %d %d %d", fs.Resp5xx, bs.RespErrors, bs.ConnErrors, bs.Resp5xx,
						ss.RespErrors, ss.ConnErrors, ss.Resp5xx, tc.eresp, tc.econ, tc.eresp, tc.econ, srv5xx)
				}
				return ""
			})
		})
	}
}
