package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers shared by the end-to-end tests. Every socket and goroutine they
// start is closed or waited for by t.Cleanup.

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// refusingAddr returns a loopback address on which nothing listens: connects
// to it are refused at once.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// rawServer is a TCP server whose handler writes whatever bytes a test wants.
type rawServer struct {
	addr string
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   map[net.Conn]struct{}
}

func startRawServer(t *testing.T, handle func(c net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String(), ln: ln, cs: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.cs[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.cs, c)
					s.mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.cs {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// readRequestHead reads one request head (up to the empty line) and returns
// its lines.
func readRequestHead(br *bufio.Reader) ([]string, error) {
	var lines []string
	for range 200 {
		l, err := br.ReadString('\n')
		if err != nil {
			return lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			return lines, nil
		}
		lines = append(lines, l)
	}
	return lines, errors.New("request head too long")
}

// dialProxy opens a raw client connection with an overall deadline.
func dialProxy(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// newClient returns a keep-alive HTTP client whose idle connections are
// closed at cleanup.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// get does a GET and returns the status and body.
func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// expectClosed reads from c until it reports the end of the connection. EOF
// (the proxy closed) passes; so does a reset, which a close with unread
// input produces. A timeout fails.
func expectClosed(t *testing.T, c net.Conn, r io.Reader) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	var b [4096]byte
	for range 1000 {
		n, err := r.Read(b[:])
		if n > 0 {
			t.Errorf("unexpected %d bytes after the response: %q", n, b[:n])
			return
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return
		default:
			t.Errorf("connection not closed by the proxy: %v", err)
			return
		}
	}
}

// payload returns n deterministic pseudo-random bytes.
func payload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for k := 0; k < 8 && i+k < n; k++ {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func backendStats(t *testing.T, e *Engine, name string) BackendStats {
	t.Helper()
	for _, b := range e.Stats().Backends {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no backend %q in stats", name)
	return BackendStats{}
}

func serverStats(t *testing.T, e *Engine, backend, name string) ServerStats {
	t.Helper()
	for _, s := range backendStats(t, e, backend).Servers {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no server %s/%s in stats", backend, name)
	return ServerStats{}
}

func frontendStats(t *testing.T, e *Engine, name string) FrontendStats {
	t.Helper()
	for _, f := range e.Stats().Frontends {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("no frontend %q in stats", name)
	return FrontendStats{}
}

// gate is a handler barrier: requests entering it signal entered and block
// until release is closed (at the latest by cleanup).
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{entered: make(chan struct{}, 64), release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		g.entered <- struct{}{}
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s\n", name)
	})
}

// waitEntered waits for n requests to enter the gate.
func (g *gate) waitEntered(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-g.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for a request to reach the backend")
		}
	}
}

// eventually polls check until it returns "" or d passes, then reports the
// last mismatch. Counters are updated when a request ends, which may be just
// after its last byte reached the client, so tests poll them.
func eventually(t *testing.T, d time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Error(msg)
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}
