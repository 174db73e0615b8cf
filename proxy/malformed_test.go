package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestMalformedRequests sends requests with ambiguous framing or oversized
// heads on raw sockets: each gets its status, the connection is closed, and
// the backend never sees any of them.
func TestMalformedRequests(t *testing.T) {
	var seen atomic.Int64
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok\n"))
	}))
	e, addr := startEngine(t, fmt.Sprintf(`
global: {max_header_size: 2k, max_request_line: 256}
defaults: {mode: http, timeouts: {connect: 1s, server: 2s, http_request: 2s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - name: app
    servers:
      - {name: s1, address: %q}
`, be.addr))

	const h = "Host: test\r\n"
	cases := []struct {
		name string
		req  string
		want []int
	}{
		{"content-length and chunked", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", []int{400}},
		{"chunked and content-length", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", []int{400}},
		{"differing content-length", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", []int{400}},
		{"content-length list differing", "POST / HTTP/1.1\r\n" + h + "Content-Length: 5, 6\r\n\r\n", []int{400}},
		{"content-length +5", "POST / HTTP/1.1\r\n" + h + "Content-Length: +5\r\n\r\n", []int{400}},
		{"content-length -1", "POST / HTTP/1.1\r\n" + h + "Content-Length: -1\r\n\r\n", []int{400}},
		{"content-length abc", "POST / HTTP/1.1\r\n" + h + "Content-Length: abc\r\n\r\n", []int{400}},
		{"content-length empty", "POST / HTTP/1.1\r\n" + h + "Content-Length: \r\n\r\n", []int{400}},
		{"te gzip, chunked", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: gzip, chunked\r\n\r\n", []int{400, 501}},
		{"te chunked, gzip", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked, gzip\r\n\r\n", []int{400, 501}},
		{"te identity", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: identity\r\n\r\n", []int{400, 501}},
		{"te chunked twice", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", []int{400}},
		{"te in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []int{400}},
		{"invalid chunk size", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", []int{400}},
		{"chunk size overflow", "POST / HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n", []int{400}},
		{"whitespace before colon", "GET / HTTP/1.1\r\n" + h + "X-Test : a\r\n\r\n", []int{400}},
		{"space in header name", "GET / HTTP/1.1\r\n" + h + "X Test: a\r\n\r\n", []int{400}},
		{"obs-fold", "GET / HTTP/1.1\r\n" + h + "X-Test: a\r\n b\r\n\r\n", []int{400}},
		{"control char in value", "GET / HTTP/1.1\r\n" + h + "X-Test: a\x01b\r\n\r\n", []int{400}},
		{"NUL in value", "GET / HTTP/1.1\r\n" + h + "X-Test: a\x00b\r\n\r\n", []int{400}},
		{"bare CR in value", "GET / HTTP/1.1\r\n" + h + "X-Test: a\rb\r\n\r\n", []int{400}},
		{"bare LF line ending", "GET / HTTP/1.1\n" + h + "\r\n", []int{400}},
		{"missing host", "GET / HTTP/1.1\r\nX-Test: a\r\n\r\n", []int{400}},
		{"two hosts", "GET / HTTP/1.1\r\n" + h + h + "\r\n", []int{400}},
		{"request line too long", "GET /" + strings.Repeat("a", 400) + " HTTP/1.1\r\n" + h + "\r\n", []int{414}},
		{"header block too large", "GET / HTTP/1.1\r\n" + h + "X-Pad: " + strings.Repeat("a", 3000) + "\r\n\r\n", []int{431}},
		{"many headers too large", "GET / HTTP/1.1\r\n" + h + strings.Repeat("X-Pad: "+strings.Repeat("b", 90)+"\r\n", 30) + "\r\n", []int{431}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialProxy(t, addr)
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			ok := false
			for _, s := range tc.want {
				ok = ok || resp.StatusCode == s
			}
			if !ok {
				t.Errorf("status %d, want one of %v", resp.StatusCode, tc.want)
			}
			expectClosed(t, c, br)
		})
	}
	if n := seen.Load(); n != 0 {
		t.Errorf("the backend saw %d malformed requests, want 0", n)
	}
	if got, want := frontendStats(t, e, "web").ReqErrors, int64(len(cases)); got != want {
		t.Errorf("frontend ereq = %d, want %d", got, want)
	}

	// The same engine still serves a well-formed request.
	status, body, err := get(newClient(t), "http://"+addr+"/")
	if err != nil || status != 200 || body != "ok\n" {
		t.Errorf("valid request after the malformed ones: %d %q %v", status, body, err)
	}
}
