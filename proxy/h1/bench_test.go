package h1

import (
	"strings"
	"testing"
)

// A typical browser GET: request line and six header fields.
const benchRequest = "GET /static/app.js?v=20240101 HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Connection: keep-alive\r\n" +
	"\r\n"

const benchResponse = "HTTP/1.1 200 OK\r\n" +
	"Date: Mon, 27 Jul 2009 12:28:53 GMT\r\n" +
	"Server: fulcrum-test\r\n" +
	"Last-Modified: Wed, 22 Jul 2009 19:15:56 GMT\r\n" +
	"Content-Length: 5120\r\n" +
	"Content-Type: application/javascript\r\n" +
	"Cache-Control: max-age=3600\r\n" +
	"\r\n"

var benchChunked = func() string {
	var b strings.Builder
	for range 4 {
		b.WriteString("400;ext=1\r\n")
		b.WriteString(strings.Repeat("x", 0x400))
		b.WriteString("\r\n")
	}
	b.WriteString("0\r\nX-Checksum: 1234\r\n\r\n")
	return b.String()
}()

func TestZeroAllocs(t *testing.T) {
	req, resp, body := []byte(benchRequest), []byte(benchResponse), []byte(benchChunked)
	bad := []byte(benchRequest)
	bad[len("GET /static")] = 0
	var r Request
	var s Response
	var c Chunked
	for name, f := range map[string]func(){
		"ParseRequest": func() {
			if _, err := ParseRequest(req, &r, Limits{}); err != nil || !r.IsHopByHop([]byte("Connection")) {
				t.Fatal(err)
			}
		},
		"ParseRequest incomplete": func() {
			if _, err := ParseRequest(req[:len(req)-1], &r, Limits{}); err != ErrIncomplete {
				t.Fatal(err)
			}
		},
		"ParseRequest error": func() {
			if _, err := ParseRequest(bad, &r, Limits{}); err != ErrBadTarget {
				t.Fatal(err)
			}
		},
		"ParseResponse": func() {
			if _, err := ParseResponse(resp, &s, Limits{}); err != nil || s.BodyKind([]byte("GET")) != LengthBody {
				t.Fatal(err)
			}
		},
		"ParseResponse error": func() {
			if _, err := ParseResponse(resp[1:], &s, Limits{}); err == nil {
				t.Fatal("no error")
			}
		},
		"Chunked": func() {
			c.Reset()
			if _, done, err := c.Scan(body); err != nil || !done {
				t.Fatal(err)
			}
		},
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocs per run", name, n)
		}
	}
}

func BenchmarkParseRequest(b *testing.B) {
	buf := []byte(benchRequest)
	var r Request
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(buf, &r, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseResponse(b *testing.B) {
	buf := []byte(benchResponse)
	var r Response
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseResponse(buf, &r, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChunked(b *testing.B) {
	buf := []byte(benchChunked)
	var c Chunked
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		c.Reset()
		if _, done, err := c.Scan(buf); err != nil || !done {
			b.Fatal(err)
		}
	}
}
