package h1

import (
	"errors"
	"strings"
	"testing"
)

// reqCase is one request-head table entry. want is nil for success, then
// check (if set) inspects the result.
type reqCase struct {
	name  string
	in    string
	lim   Limits
	want  *Error
	check func(t *testing.T, r *Request)
}

func get(headers string) string { return "GET / HTTP/1.1\r\nHost: a\r\n" + headers + "\r\n" }

var reqCases = []reqCase{
	// Valid heads.
	{name: "minimal 1.1", in: "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "method", r.Method, "GET")
		eq(t, "target", r.Target, "/")
		eq(t, "host", r.Host, "example.com")
		if r.Minor != 1 || !r.KeepAlive || r.ContentLength != -1 || r.Chunked || r.BodyKind() != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "1.0 no host", in: "GET /x?y=1 HTTP/1.0\r\n\r\n", check: func(t *testing.T, r *Request) {
		if r.Minor != 0 || r.KeepAlive || r.Host != nil || len(r.Headers) != 0 {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "1.0 keep-alive", in: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", check: keepAlive(true)},
	{name: "1.1 close", in: get("Connection: keep-alive, CLOSE\r\n"), check: keepAlive(false)},
	{name: "1.1 close in second field", in: get("Connection: foo\r\nConnection: close\r\n"), check: keepAlive(false)},
	{name: "method token chars", in: "M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "method", r.Method, "M-SEARCH")
	}},
	{name: "asterisk-form", in: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "target", r.Target, "*")
	}},
	{name: "authority-form", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "target", r.Target, "example.com:443")
		eq(t, "authority", r.Authority(), "example.com:443")
	}},
	{name: "absolute-form target", in: "GET http://b:80/c?d#e HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "target", r.Target, "http://b:80/c?d#e")
		eq(t, "authority", r.Authority(), "b:80")
		eq(t, "host", r.Host, "a")
	}},
	{name: "absolute-form no path", in: "GET https://b HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "authority", r.Authority(), "b")
	}},
	{name: "absolute-form without authority", in: "GET urn:x HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "authority", r.Authority(), "a")
	}},
	{name: "origin-form authority is host", in: "GET //b/c HTTP/1.1\r\nHost: a\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "authority", r.Authority(), "a")
	}},
	{name: "obs-text in target", in: "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "OWS trimmed", in: get("X-A: \t v a l \t \r\nX-B:\r\nX-C:   \r\n"), check: func(t *testing.T, r *Request) {
		eq(t, "X-A", r.Headers[1].Value, "v a l")
		eq(t, "X-B", r.Headers[2].Value, "")
		eq(t, "X-C", r.Headers[3].Value, "")
		eq(t, "name", r.Headers[3].Name, "X-C")
	}},
	{name: "obs-text and HTAB in value", in: get("X: a\tb\x80\xff\r\n")},
	{name: "content-length", in: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\nbody", check: func(t *testing.T, r *Request) {
		if r.ContentLength != 42 || r.BodyKind() != LengthBody || r.HeadLen != len("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n") {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "content-length zero", in: get("Content-Length: 0\r\n"), check: func(t *testing.T, r *Request) {
		if r.ContentLength != 0 || r.BodyKind() != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "content-length leading zeros", in: get("Content-Length: 007\r\n"), check: contentLength(7)},
	{name: "content-length max int64", in: get("Content-Length: 9223372036854775807\r\n"), check: contentLength(1<<63 - 1)},
	{name: "content-length identical duplicates", in: get("Content-Length: 5\r\ncontent-length: 5\r\n"), check: contentLength(5)},
	{name: "content-length identical list", in: get("Content-Length: 5 ,5,\t5\r\n"), check: contentLength(5)},
	{name: "chunked", in: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", check: func(t *testing.T, r *Request) {
		if !r.Chunked || r.ContentLength != -1 || r.BodyKind() != ChunkedBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "chunked case-insensitive", in: get("transfer-encoding: ChUnKeD\r\n"), check: chunked},
	{name: "chunked with OWS", in: get("Transfer-Encoding: \t chunked \r\n"), check: chunked},
	{name: "expect 100-continue", in: get("Expect: 100-Continue\r\nContent-Length: 1\r\n"), check: func(t *testing.T, r *Request) {
		if !r.Expect100 {
			t.Error("Expect100 false")
		}
	}},
	{name: "expect in 1.0 ignored", in: "PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", check: func(t *testing.T, r *Request) {
		if r.Expect100 {
			t.Error("Expect100 true for HTTP/1.0")
		}
	}},
	{name: "upgrade", in: get("Connection: Upgrade\r\nUpgrade: websocket\r\n"), check: func(t *testing.T, r *Request) {
		if !r.Upgrade {
			t.Error("Upgrade false")
		}
	}},
	{name: "upgrade token without field", in: get("Connection: upgrade\r\n"), check: func(t *testing.T, r *Request) {
		if r.Upgrade {
			t.Error("Upgrade true")
		}
	}},
	{name: "upgrade field without token", in: get("Upgrade: websocket\r\n"), check: func(t *testing.T, r *Request) {
		if r.Upgrade {
			t.Error("Upgrade true")
		}
	}},
	{name: "connection tokens", in: get("Connection: keep-alive, X-Foo, , Host, content-length\r\nX-Foo: 1\r\n"), check: func(t *testing.T, r *Request) {
		if len(r.ConnTokens) != 1 {
			t.Fatalf("ConnTokens %q", r.ConnTokens)
		}
		for name, want := range map[string]bool{
			"x-foo": true, "X-FOO": true, "Connection": true, "keep-alive": true, "Proxy-Connection": true,
			"TE": true, "Transfer-Encoding": true, "upgrade": true,
			"Host": false, "Content-Length": false, "Trailer": false, "Proxy-Authenticate": false, "X-Bar": false,
		} {
			if got := r.IsHopByHop([]byte(name)); got != want {
				t.Errorf("IsHopByHop(%q) = %v", name, got)
			}
		}
	}},
	{name: "host with port and ipv6", in: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", check: func(t *testing.T, r *Request) {
		eq(t, "host", r.Host, "[::1]:8080")
	}},
	{name: "empty host", in: "GET / HTTP/1.1\r\nHost:\r\n\r\n", check: func(t *testing.T, r *Request) {
		if r.Host == nil || len(r.Host) != 0 {
			t.Errorf("Host %q", r.Host)
		}
	}},
	{name: "request line at limit", lim: Limits{MaxRequestLine: 16}, in: "GET /12 HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "head at limit", lim: Limits{MaxHeaderBytes: 27}, in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{name: "headers at limit", lim: Limits{MaxHeaders: 2}, in: get("X: 1\r\n")},
	{name: "pipelined bytes after head ignored", in: get("") + "GET / HTTP/1.1\r\n\x00"},

	// Request line.
	{name: "leading CRLF", in: "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadRequestLine},
	{name: "leading space", in: " GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadRequestLine},
	{name: "method not token", in: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadMethod},
	{name: "method tab", in: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadMethod},
	{name: "double space after method", in: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadRequestLine},
	{name: "double space after target", in: "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadVersion},
	{name: "trailing space", in: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", want: ErrBadVersion},
	{name: "space in target", in: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadVersion},
	{name: "CTL in target", in: "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "DEL in target", in: "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "NUL in target", in: "GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "asterisk for GET", in: "GET * HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "asterisk with more", in: "OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "relative target", in: "GET x/y HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "scheme-less target", in: "GET 0 HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "bad scheme", in: "GET ht_tp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "CONNECT origin-form", in: "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "absolute-form userinfo", in: "GET http://u:p@b/ HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "absolute-form backslash", in: "GET http://b\\c/ HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "absolute-form empty authority", in: "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "CONNECT userinfo", in: "CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrBadTarget},
	{name: "HTTP/0.9", in: "GET /\r\n\r\n", want: ErrBadRequestLine},
	{name: "no version", in: "GET / \r\n\r\n", want: ErrBadVersion},
	{name: "lowercase version", in: "GET / http/1.1\r\nHost: a\r\n\r\n", want: ErrBadVersion},
	{name: "version 1.10", in: "GET / HTTP/1.10\r\nHost: a\r\n\r\n", want: ErrBadVersion},
	{name: "version 2.0", in: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", want: ErrVersionNotSupported},
	{name: "version 1.2", in: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", want: ErrVersionNotSupported},
	{name: "version 0.9", in: "GET / HTTP/0.9\r\n\r\n", want: ErrVersionNotSupported},
	{name: "h2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: ErrVersionNotSupported},
	{name: "bare LF request line", in: "GET / HTTP/1.1\nHost: a\r\n\r\n", want: ErrBadLineEnding},
	{name: "bare CR request line", in: "GET / HTTP/1.1\rHost: a\r\n\r\n", want: ErrBadLineEnding},
	{name: "request line too long", lim: Limits{MaxRequestLine: 16}, in: "GET /123 HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrRequestLineTooLong},
	{name: "request line too long default", in: "GET /" + strings.Repeat("a", 8192) + " HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrRequestLineTooLong},
	{name: "request line too long incomplete", in: "GET /" + strings.Repeat("a", 8200), want: ErrRequestLineTooLong},
	{name: "long method", in: strings.Repeat("G", 9000), want: ErrRequestLineTooLong},
	{name: "request line over head limit", lim: Limits{MaxHeaderBytes: 20}, in: "GET /1234567890123456789", want: ErrHeaderTooLarge},

	// Header fields.
	{name: "bare LF header", in: "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", want: ErrBadLineEnding},
	{name: "bare LF end of head", in: "GET / HTTP/1.1\r\nHost: a\r\n\n", want: ErrBadLineEnding},
	{name: "bare CR end of head", in: "GET / HTTP/1.1\r\nHost: a\r\n\rX", want: ErrBadLineEnding},
	{name: "space before colon", in: get("X-A : b\r\n"), want: ErrBadHeaderName},
	{name: "tab before colon", in: get("X-A\t: b\r\n"), want: ErrBadHeaderName},
	{name: "empty name", in: get(": b\r\n"), want: ErrBadHeaderName},
	{name: "no colon", in: get("X-A b\r\n"), want: ErrBadHeaderName},
	{name: "no colon at end", in: get("X-A\r\n"), want: ErrBadHeaderName},
	{name: "non-token name", in: get("X(A): b\r\n"), want: ErrBadHeaderName},
	{name: "utf8 name", in: get("X-\xc3\xa9: b\r\n"), want: ErrBadHeaderName},
	{name: "NUL in value", in: get("X: a\x00b\r\n"), want: ErrBadHeaderValue},
	{name: "CR in value", in: get("X: a\rb\r\n"), want: ErrBadHeaderValue},
	{name: "LF in value", in: get("X: a\nb\r\n"), want: ErrBadLineEnding},
	{name: "DEL in value", in: get("X: a\x7f\r\n"), want: ErrBadHeaderValue},
	{name: "ESC in value", in: get("X: \x1b[31m\r\n"), want: ErrBadHeaderValue},
	{name: "obs-fold", in: get("X: a\r\n b\r\n"), want: ErrObsFold},
	{name: "obs-fold tab", in: get("X: a\r\n\tb\r\n"), want: ErrObsFold},
	{name: "whitespace before first field", in: "GET / HTTP/1.1\r\n Host: a\r\n\r\n", want: ErrObsFold},
	{name: "too many headers", lim: Limits{MaxHeaders: 2}, in: get("X: 1\r\nY: 2\r\n"), want: ErrTooManyHeaders},
	{name: "too many headers default", in: get(strings.Repeat("X: 1\r\n", 100)), want: ErrTooManyHeaders},
	{name: "head too large", lim: Limits{MaxHeaderBytes: 26}, in: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: ErrHeaderTooLarge},
	{name: "head too large default", in: get(strings.Repeat("X: "+strings.Repeat("a", 1000)+"\r\n", 17)), want: ErrHeaderTooLarge},
	{name: "head too large incomplete", in: get(strings.Repeat("X: "+strings.Repeat("a", 1000)+"\r\n", 17))[:16400], want: ErrHeaderTooLarge},

	// Host.
	{name: "missing host", in: "GET / HTTP/1.1\r\nX: a\r\n\r\n", want: ErrMissingHost},
	{name: "duplicate host", in: get("host: b\r\n"), want: ErrDuplicateHost},
	{name: "duplicate identical host", in: get("Host: a\r\n"), want: ErrDuplicateHost},
	{name: "duplicate host 1.0", in: "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", want: ErrDuplicateHost},
	{name: "host with space", in: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", want: ErrBadHost},
	{name: "host with slash", in: "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", want: ErrBadHost},
	{name: "host with at", in: "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", want: ErrBadHost},

	// Content-Length.
	{name: "cl empty", in: get("Content-Length:\r\n"), want: ErrBadContentLength},
	{name: "cl sign", in: get("Content-Length: +5\r\n"), want: ErrBadContentLength},
	{name: "cl negative", in: get("Content-Length: -1\r\n"), want: ErrBadContentLength},
	{name: "cl space inside", in: get("Content-Length: 1 2\r\n"), want: ErrBadContentLength},
	{name: "cl hex", in: get("Content-Length: 0x10\r\n"), want: ErrBadContentLength},
	{name: "cl overflow", in: get("Content-Length: 9223372036854775808\r\n"), want: ErrBadContentLength},
	{name: "cl huge", in: get("Content-Length: 99999999999999999999999\r\n"), want: ErrBadContentLength},
	{name: "cl empty element", in: get("Content-Length: 5,,5\r\n"), want: ErrBadContentLength},
	{name: "cl trailing comma", in: get("Content-Length: 5,\r\n"), want: ErrBadContentLength},
	{name: "cl differing duplicates", in: get("Content-Length: 5\r\nContent-Length: 6\r\n"), want: ErrConflictingLength},
	{name: "cl differing list", in: get("Content-Length: 5, 6\r\n"), want: ErrConflictingLength},

	// Transfer-Encoding.
	{name: "cl and te", in: get("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), want: ErrLengthAndChunked},
	{name: "te and cl", in: get("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"), want: ErrLengthAndChunked},
	{name: "te unknown", in: get("Transfer-Encoding: gzip\r\n"), want: ErrUnsupportedCoding},
	{name: "te identity", in: get("Transfer-Encoding: identity\r\n"), want: ErrUnsupportedCoding},
	{name: "te gzip then chunked", in: get("Transfer-Encoding: gzip, chunked\r\n"), want: ErrUnsupportedCoding},
	{name: "te chunked not last", in: get("Transfer-Encoding: chunked, gzip\r\n"), want: ErrBadTransferEncoding},
	{name: "te chunked twice", in: get("Transfer-Encoding: chunked, chunked\r\n"), want: ErrBadTransferEncoding},
	{name: "te chunked twice fields", in: get("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), want: ErrBadTransferEncoding},
	{name: "te chunked then gzip fields", in: get("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"), want: ErrBadTransferEncoding},
	{name: "te empty", in: get("Transfer-Encoding:\r\n"), want: ErrBadTransferEncoding},
	{name: "te empty element before", in: get("Transfer-Encoding: ,chunked\r\n"), want: ErrBadTransferEncoding},
	{name: "te empty element after", in: get("Transfer-Encoding: chunked,\r\n"), want: ErrBadTransferEncoding},
	{name: "te only commas", in: get("Transfer-Encoding: , ,\r\n"), want: ErrBadTransferEncoding},
	{name: "te with params", in: get("Transfer-Encoding: chunked;q=1\r\n"), want: ErrBadTransferEncoding},
	{name: "te near chunked", in: get("Transfer-Encoding: xchunked\r\n"), want: ErrUnsupportedCoding},
	{name: "te quoted", in: get("Transfer-Encoding: \"chunked\"\r\n"), want: ErrBadTransferEncoding},
	{name: "te in 1.0", in: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", want: ErrTransferEncodingHTTP10},

	// Connection.
	{name: "connection not token", in: get("Connection: close; x\r\n"), want: ErrBadConnection},
}

func keepAlive(want bool) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		if r.KeepAlive != want {
			t.Errorf("KeepAlive = %v, want %v", r.KeepAlive, want)
		}
	}
}

func contentLength(want int64) func(*testing.T, *Request) {
	return func(t *testing.T, r *Request) {
		if r.ContentLength != want || r.Chunked {
			t.Errorf("ContentLength = %d (chunked %v), want %d", r.ContentLength, r.Chunked, want)
		}
	}
}

func chunked(t *testing.T, r *Request) {
	if !r.Chunked || r.BodyKind() != ChunkedBody {
		t.Errorf("got %+v", r)
	}
}

func eq(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if string(got) != want {
		t.Errorf("%s = %q, want %q", what, got, want)
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range reqCases {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte(tc.in)
			var r Request
			n, err := ParseRequest(buf, &r, tc.lim)
			if tc.want != nil {
				if err != tc.want {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				var e *Error
				if !errors.As(err, &e) || e.Status != tc.want.Status {
					t.Fatalf("status of %v is not %d", err, tc.want.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if n != r.HeadLen || n > len(buf) || !strings.HasSuffix(tc.in[:n], "\r\n\r\n") && !strings.HasSuffix(tc.in[:n], "\n\r\n") {
				t.Fatalf("n = %d, HeadLen = %d", n, r.HeadLen)
			}
			checkSubslices(t, buf, r.HeadLen, &r)
			if tc.check != nil {
				tc.check(t, &r)
			}
		})
	}
}

func TestRequestStatuses(t *testing.T) {
	for e, want := range map[*Error]int{
		ErrBadRequestLine: 400, ErrRequestLineTooLong: 414, ErrHeaderTooLarge: 431, ErrTooManyHeaders: 431,
		ErrUnsupportedCoding: 501, ErrVersionNotSupported: 505, ErrMissingHost: 400, ErrLengthAndChunked: 400,
	} {
		if e.Status != want {
			t.Errorf("%v: status %d, want %d", e, e.Status, want)
		}
	}
	reasons := map[string]bool{}
	for f, e := range reqErrors {
		if f > int(fIncomplete) {
			if e == nil || reasons[e.Reason] {
				t.Errorf("fault %d: %v missing or reason not unique", f, e)
				continue
			}
			reasons[e.Reason] = true
		}
	}
}

// TestParseRequestIncremental feeds every table entry one byte more at a
// time, as the proxy does when bytes trickle in: the first answer other
// than ErrIncomplete must be the one-shot answer, at the same length for a
// success, and appending bytes after the head must not change it.
func TestParseRequestIncremental(t *testing.T) {
	for _, tc := range reqCases {
		t.Run(tc.name, func(t *testing.T) {
			checkRequestIncremental(t, []byte(tc.in), tc.lim)
			checkRequestIncremental(t, []byte(tc.in+"GARBAGE\x00\r\n"), tc.lim)
		})
	}
}

func checkRequestIncremental(t *testing.T, buf []byte, lim Limits) {
	t.Helper()
	var whole, part Request
	n, err := ParseRequest(buf, &whole, lim)
	for k := 0; k <= len(buf); k++ {
		pn, perr := ParseRequest(buf[:k], &part, lim)
		if perr == ErrIncomplete {
			if err == nil && k >= n {
				t.Fatalf("prefix %d of a %d-byte head: incomplete", k, n)
			}
			continue
		}
		if perr != err || pn != n {
			t.Fatalf("prefix %d: (%d, %v), whole: (%d, %v)", k, pn, perr, n, err)
		}
		if err == nil {
			if k != n {
				t.Fatalf("head of %d bytes complete at prefix %d", n, k)
			}
			if !sameRequest(&whole, &part) {
				t.Fatalf("prefix %d: %+v\nwhole: %+v", k, part, whole)
			}
		}
		return
	}
	if err != ErrIncomplete {
		t.Fatalf("every prefix incomplete, whole: %v", err)
	}
}
