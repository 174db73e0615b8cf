package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const bigBody = 4 << 20

// streamConfig is oneBackendConfig with timeouts long enough for 4 MiB under
// -race on a loaded machine: these tests are about framing, not timeouts.
func streamConfig(addr string) string {
	return fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 5s, client: 60s, server: 60s}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, addr)
}

// onlyReader hides every method but Read, so net/http cannot learn the
// length and sends the body chunked.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// TestRequestBodiesStreamed sends 4 MiB request bodies with Content-Length
// and chunked; the backend must receive them intact.
func TestRequestBodiesStreamed(t *testing.T) {
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %s %s", n, hex.EncodeToString(h.Sum(nil)), strings.Join(r.TransferEncoding, ","))
	}))
	_, addr := startEngine(t, streamConfig(be.addr))
	data := payload(bigBody, 1)
	want := sha(data)
	cl := newClient(t)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var body io.Reader = bytes.NewReader(data)
			if chunked {
				body = onlyReader{bytes.NewReader(data)}
			}
			req, err := http.NewRequest("POST", "http://"+addr+"/upload", body)
			if err != nil {
				t.Fatal(err)
			}
			if chunked {
				req.ContentLength = -1
			}
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			f := strings.Fields(string(got))
			if resp.StatusCode != 200 || len(f) < 2 || f[0] != strconv.Itoa(bigBody) || f[1] != want {
				t.Fatalf("backend got %d %q, want %d bytes with sha256 %s", resp.StatusCode, got, bigBody, want)
			}
			if chunked && (len(f) < 3 || f[2] != "chunked") {
				t.Errorf("backend saw transfer encoding %q, want chunked", f[2:])
			}
		})
	}
}

// TestResponseBodiesStreamed relays 4 MiB responses delimited by
// Content-Length, by chunked encoding and by the server's close.
func TestResponseBodiesStreamed(t *testing.T) {
	data := payload(bigBody, 2)
	want := sha(data)
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/length" {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		}
		f := w.(http.Flusher)
		for i := 0; i < len(data); i += 32 << 10 {
			w.Write(data[i:min(i+32<<10, len(data))])
			if r.URL.Path == "/chunked" {
				f.Flush()
			}
		}
	}))
	closeDelim := startRawServer(t, func(c net.Conn) {
		if _, err := readRequestHead(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		c.Write(data)
		// The close ends the body.
	})
	_, web := startEngine(t, streamConfig(be.addr))
	_, raw := startEngine(t, streamConfig(closeDelim.addr))
	cl := newClient(t)
	for _, tc := range []struct{ name, url, te string }{
		{"length", "http://" + web + "/length", ""},
		{"chunked", "http://" + web + "/chunked", "chunked"},
		{"close-delimited", "http://" + raw + "/", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := cl.Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("reading the body: %v (after %d bytes)", err, len(got))
			}
			if resp.StatusCode != 200 || len(got) != len(data) || sha(got) != want {
				t.Fatalf("status %d, %d bytes, sha256 %s; want 200, %d bytes, %s", resp.StatusCode, len(got), sha(got), len(data), want)
			}
			if te := strings.Join(resp.TransferEncoding, ","); te != tc.te {
				t.Errorf("transfer encoding %q, want %q", te, tc.te)
			}
			if tc.name == "length" && resp.ContentLength != int64(len(data)) {
				t.Errorf("content length %d, want %d", resp.ContentLength, len(data))
			}
			if tc.name == "close-delimited" && !resp.Close {
				t.Errorf("close-delimited body relayed without Connection: close")
			}
		})
	}
}

// TestExpectContinue: the client sends a head with Expect: 100-continue,
// waits for the interim 100, then sends the body and gets 200.
func TestExpectContinue(t *testing.T) {
	var mu sync.Mutex
	var gotExpect []string
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotExpect = append(gotExpect, r.Header.Get("Expect"))
		mu.Unlock()
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s", b)
	}))
	_, addr := startEngine(t, oneBackendConfig(be.addr))
	c := dialProxy(t, addr)
	io.WriteString(c, "POST /e HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no interim response before the body: %v", err)
	}
	if !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first line %q, want HTTP/1.1 100 Continue", line)
	}
	if l, err := br.ReadString('\n'); err != nil || l != "\r\n" {
		t.Fatalf("100 Continue not followed by an empty line: %q %v", l, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "got hello" {
		t.Fatalf("response %d %q, want 200 \"got hello\"", resp.StatusCode, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gotExpect) != 1 || gotExpect[0] != "" {
		t.Errorf("backend saw Expect %q, want it answered by the proxy and removed", gotExpect)
	}
}

// TestUpgradeTunnel: a 101 answer to an Upgrade request turns the exchange
// into a byte tunnel in both directions.
func TestUpgradeTunnel(t *testing.T) {
	// Cleanups run last-in first-out: close the hijacked connections, then
	// wait for their echo loops.
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	var hmu sync.Mutex
	var hijacked []net.Conn
	t.Cleanup(func() {
		hmu.Lock()
		defer hmu.Unlock()
		for _, c := range hijacked {
			c.Close()
		}
	})
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "no upgrade", 400)
			return
		}
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		hmu.Lock()
		hijacked = append(hijacked, c)
		wg.Add(1)
		hmu.Unlock()
		defer wg.Done()
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		var b [4096]byte
		for range 1 << 20 {
			n, err := rw.Read(b[:])
			if n > 0 {
				if _, werr := c.Write(b[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}))
	_, addr := startEngine(t, oneBackendConfig(be.addr))
	c := dialProxy(t, addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "echo" {
		t.Fatalf("response %d, Upgrade %q; want 101 echo", resp.StatusCode, resp.Header.Get("Upgrade"))
	}
	for i := range 10 {
		msg := fmt.Sprintf("ping %d ", i) + strings.Repeat("x", i*1000)
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if string(got) != msg {
			t.Fatalf("round %d: echoed %q, want %q", i, got[:min(len(got), 20)], msg[:min(len(msg), 20)])
		}
	}
	// The client closes its side; the tunnel must carry the close through.
	c.(*net.TCPConn).CloseWrite()
	expectClosed(t, c, br)
}

// TestTimeoutsAreInactivity: `timeout server` and `timeout client` bound
// silence, not the whole exchange (as in HAProxy): a response that trickles
// in for longer than timeout server, with every gap shorter, and an upload
// that trickles for longer than timeout client, complete.
func TestTimeoutsAreInactivity(t *testing.T) {
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/upload" {
			fmt.Fprintf(w, "got %d", len(b))
			return
		}
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(200)
		for range 10 {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(80 * time.Millisecond) // the workload: a slow producer
		}
	}))
	_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, client: 400ms, server: 400ms}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, be.addr))
	t.Run("slow response", func(t *testing.T) {
		status, body, err := get(newClient(t), "http://"+addr+"/slow")
		if err != nil || status != 200 || body != "xxxxxxxxxx" {
			t.Errorf("trickled response: %d %q %v; want 200 and 10 bytes", status, body, err)
		}
	})
	t.Run("slow upload", func(t *testing.T) {
		c := dialProxy(t, addr)
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n")
		for range 10 {
			time.Sleep(80 * time.Millisecond) // the workload: a slow client
			if _, err := c.Write([]byte("y")); err != nil {
				t.Fatalf("upload cut: %v", err)
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "got 10" {
			t.Errorf("trickled upload: %d %q; want 200 \"got 10\"", resp.StatusCode, b)
		}
	})
}

// TestCloseDelimitedServerTimeout: a server that goes silent in the middle
// of a close-delimited body must not produce a reply that looks complete:
// the client must see the connection aborted (reset), not a clean EOF that
// ends the body as if the server had closed.
func TestCloseDelimitedServerTimeout(t *testing.T) {
	srv := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := readRequestHead(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nhello")
		io.Copy(io.Discard, br) // silent until the proxy gives up
	})
	_, addr := startEngine(t, fmt.Sprintf(`
defaults: {mode: http, timeouts: {connect: 1s, server: 300ms}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`, srv.addr))
	c := dialProxy(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Errorf("body %q ended by a clean close after the server timed out: the client cannot tell it was truncated", b)
	}
}

// TestPipelinedRequests: two requests in one write get two responses, in
// order, on the same connection.
func TestPipelinedRequests(t *testing.T) {
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
	}))
	_, addr := startEngine(t, oneBackendConfig(be.addr))
	c := dialProxy(t, addr)
	io.WriteString(c, "POST /one HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /two HTTP/1.1\r\nHost: test\r\n\r\n"+
		"HEAD /three HTTP/1.1\r\nHost: test\r\n\r\n"+
		"GET /four HTTP/1.1\r\nHost: test\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []struct{ method, body string }{
		{"POST", "POST /one abc"}, {"GET", "GET /two "}, {"HEAD", ""}, {"GET", "GET /four "},
	} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatalf("%s: %v", want.body, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != want.body {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, b, want.body)
		}
	}
}

// TestStaleServerConnection: a pooled server connection that the server
// closed while idle is replaced transparently, for a request without a body
// and for one with a body.
func TestStaleServerConnection(t *testing.T) {
	closed := make(chan struct{}, 16)
	srv := startRawServer(t, func(c net.Conn) {
		// One request per connection, announced as keep-alive, then close.
		defer func() {
			c.Close()
			closed <- struct{}{}
		}()
		br := bufio.NewReader(c)
		lines, err := readRequestHead(br)
		if err != nil {
			return
		}
		for _, l := range lines {
			var n int
			if _, err := fmt.Sscanf(strings.ToLower(l), "content-length: %d", &n); err == nil {
				io.CopyN(io.Discard, br, int64(n))
			}
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	_, addr := startEngine(t, oneBackendConfig(srv.addr))
	c := dialProxy(t, addr)
	br := bufio.NewReader(c)
	for i, req := range []string{
		"GET /a HTTP/1.1\r\nHost: test\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost: test\r\n\r\n",
		"POST /c HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nbody",
	} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d over a stale pooled connection: %d %q, want 200 ok", i, resp.StatusCode, b)
		}
		select {
		case <-closed: // the server has closed this connection
		case <-time.After(5 * time.Second):
			t.Fatal("server connection not closed")
		}
	}
}

// TestSplicedBodyTimeoutsAndTruncation: a Content-Length body large enough
// to be spliced keeps HAProxy's inactivity timeouts (a slow producer whose
// whole body takes longer than the server timeout still gets through), and
// a server that closes before the end of its body makes the client's
// response fail (not a short body taken for whole), counted as a response
// error of the server.
func TestSplicedBodyTimeoutsAndTruncation(t *testing.T) {
	const piece, pieces = 32 << 10, 8
	data := payload(piece*pieces, 7)
	be := startBackend(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		for i := range pieces {
			w.Write(data[i*piece : (i+1)*piece])
			w.(http.Flusher).Flush()
			time.Sleep(80 * time.Millisecond) // the workload: a slow producer
		}
	}))
	cut := startRawServer(t, func(c net.Conn) {
		if _, err := readRequestHead(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
		c.Write(data[:100<<10])
	})
	cfg := `
defaults: {mode: http, timeouts: {connect: 1s, client: 400ms, server: 400ms}}
frontends:
  - {name: web, bind: ["127.0.0.1:0"], default_backend: app}
backends:
  - {name: app, servers: [{name: s1, address: %q}]}
`
	_, slow := startEngine(t, fmt.Sprintf(cfg, be.addr))
	e, short := startEngine(t, fmt.Sprintf(cfg, cut.addr))
	cl := newClient(t)

	start := time.Now()
	resp, err := cl.Get("http://" + slow + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || sha(got) != sha(data) {
		t.Errorf("slow 256 KiB body over %v with 400 ms timeouts: %d bytes, %v", time.Since(start).Round(time.Millisecond), len(got), err)
	}

	resp, err = cl.Get("http://" + short + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("a body cut at %d of 1048576 bytes read as whole", len(got))
	}
	eventually(t, 2*time.Second, func() string {
		if n := serverStats(t, e, "app", "s1").RespErrors; n != 1 {
			return fmt.Sprintf("server s1 eresp %d, want 1", n)
		}
		return ""
	})
}
