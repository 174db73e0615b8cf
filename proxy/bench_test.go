package proxy

import (
	"bytes"
	"fmt"
	"net"
	"testing"
)

// rawBackend answers every request on a connection with a canned 64-byte
// response, allocating nothing per request, so that a benchmark's
// allocations are the proxy's own. It assumes one request per read, which
// holds for the lock-step client below.
func rawBackend(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n" +
		string(bytes.Repeat([]byte("a"), 64)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// BenchmarkHTTPKeepAlive measures one small GET through the proxy on a
// keep-alive connection: the proxy's allocations per request are what
// -benchmem reports (the client and backend allocate nothing per request).
func BenchmarkHTTPKeepAlive(b *testing.B) {
	backend := rawBackend(b)
	_, addr := startEngine(b, oneBackendConfig(backend))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4096)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got == 0 || !bytes.HasSuffix(buf[:got], []byte("aaaa")) {
			n, err := c.Read(buf[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	roundTrip()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
}

// BenchmarkTCPMode measures one small exchange through a TCP-mode proxy.
func BenchmarkTCPMode(b *testing.B) {
	backend := rawBackend(b)
	_, addr := startEngine(b, fmt.Sprintf(`
defaults: {mode: tcp}
frontends: [{name: t, bind: ["127.0.0.1:0"], default_backend: b}]
backends: [{name: b, servers: [{name: s, address: %q}]}]
`, backend))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got == 0 || !bytes.HasSuffix(buf[:got], []byte("aaaa")) {
			n, err := c.Read(buf[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// BenchmarkHTTPNewConnection measures a small GET on a new connection
// (Connection: close), compare.sh's http-close: what a connection costs
// beyond its request, allocations included (the client's dial and the
// Go net package's accept allocate too).
func BenchmarkHTTPNewConnection(b *testing.B) {
	backend := rawBackend(b)
	_, addr := startEngine(b, oneBackendConfig(backend))
	req := []byte("GET /small HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := c.Read(buf); err != nil {
				break // the proxy closes after the answer
			}
		}
		c.Close()
	}
}
