package h1

import (
	"errors"
	"strings"
	"testing"
)

type respCase struct {
	name  string
	in    string
	lim   Limits
	want  *Error // request-side fault; ParseResponse must return its 502 twin
	check func(t *testing.T, r *Response)
}

func ok200(headers string) string { return "HTTP/1.1 200 OK\r\n" + headers + "\r\n" }

var respCases = []respCase{
	{name: "200 length", in: ok200("Content-Length: 5\r\nServer: x\r\n") + "hello", check: func(t *testing.T, r *Response) {
		eq(t, "reason", r.Reason, "OK")
		if r.Status != 200 || r.Minor != 1 || r.ContentLength != 5 || !r.KeepAlive || r.BodyKind(nil) != LengthBody || len(r.Headers) != 2 {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "empty reason", in: "HTTP/1.1 404 \r\n\r\n", check: func(t *testing.T, r *Response) {
		eq(t, "reason", r.Reason, "")
		if r.Status != 404 {
			t.Errorf("status %d", r.Status)
		}
	}},
	{name: "missing SP before empty reason", in: "HTTP/1.1 204\r\n\r\n", check: func(t *testing.T, r *Response) {
		eq(t, "reason", r.Reason, "")
		if r.Status != 204 || r.BodyKind(nil) != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "reason with spaces and obs-text", in: "HTTP/1.1 500 Internal\tServer \xe9rror\r\n\r\n", check: func(t *testing.T, r *Response) {
		eq(t, "reason", r.Reason, "Internal\tServer \xe9rror")
	}},
	{name: "1.0 close-delimited", in: "HTTP/1.0 200 OK\r\n\r\n", check: func(t *testing.T, r *Response) {
		if r.Minor != 0 || r.KeepAlive || r.BodyKind([]byte("GET")) != CloseDelimited {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "1.0 keep-alive", in: "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", check: func(t *testing.T, r *Response) {
		if !r.KeepAlive || r.BodyKind(nil) != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "chunked", in: ok200("Transfer-Encoding: chunked\r\nConnection: close\r\n"), check: func(t *testing.T, r *Response) {
		if !r.Chunked || r.KeepAlive || r.BodyKind([]byte("GET")) != ChunkedBody || r.BodyKind([]byte("HEAD")) != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "no body statuses", in: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", check: func(t *testing.T, r *Response) {
		if r.BodyKind([]byte("GET")) != NoBody {
			t.Error("304 has a body")
		}
		for _, s := range []int{100, 101, 199, 204, 304} {
			if k := (&Response{Status: s, ContentLength: 10}).BodyKind([]byte("GET")); k != NoBody {
				t.Errorf("%d: %v", s, k)
			}
		}
		if k := (&Response{Status: 200, ContentLength: -1}).BodyKind([]byte("CONNECT")); k != NoBody {
			t.Errorf("CONNECT 200: %v", k)
		}
		if k := (&Response{Status: 407, ContentLength: -1}).BodyKind([]byte("CONNECT")); k != CloseDelimited {
			t.Errorf("CONNECT 407: %v", k)
		}
	}},
	{name: "101 upgrade", in: "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", check: func(t *testing.T, r *Response) {
		if !r.Upgrade || r.BodyKind([]byte("GET")) != NoBody {
			t.Errorf("got %+v", r)
		}
	}},
	{name: "426 is not an upgrade", in: "HTTP/1.1 426 Upgrade Required\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", check: func(t *testing.T, r *Response) {
		if r.Upgrade {
			t.Error("Upgrade true")
		}
	}},
	{name: "hop by hop", in: ok200("Connection: X-Trace\r\nContent-Length: 0\r\n"), check: func(t *testing.T, r *Response) {
		if !r.IsHopByHop([]byte("x-trace")) || !r.IsHopByHop([]byte("Keep-Alive")) || r.IsHopByHop([]byte("Content-Length")) {
			t.Errorf("ConnTokens %q", r.ConnTokens)
		}
	}},
	{name: "status 599", in: "HTTP/1.1 599 x\r\n\r\n"},
	{name: "host not special", in: ok200("Host: a\r\nHost: b c\r\n")},

	{name: "status too low", in: "HTTP/1.1 099 x\r\n\r\n", want: ErrBadStatus},
	{name: "status too high", in: "HTTP/1.1 600 x\r\n\r\n", want: ErrBadStatus},
	{name: "status two digits", in: "HTTP/1.1 20 OK\r\n\r\n", want: ErrBadStatus},
	{name: "status four digits", in: "HTTP/1.1 2000 OK\r\n\r\n", want: ErrBadStatusLine},
	{name: "status sign", in: "HTTP/1.1 +20 OK\r\n\r\n", want: ErrBadStatus},
	{name: "double space", in: "HTTP/1.1  200 OK\r\n\r\n", want: ErrBadStatus},
	{name: "bad proto", in: "HTTP/1.x 200 OK\r\n\r\n", want: ErrBadStatusLine},
	{name: "lowercase proto", in: "http/1.1 200 OK\r\n\r\n", want: ErrBadStatusLine},
	{name: "no space after version", in: "HTTP/1.1200 OK\r\n\r\n", want: ErrBadStatusLine},
	{name: "version 2", in: "HTTP/2.0 200 OK\r\n\r\n", want: ErrVersionNotSupported},
	{name: "CTL in reason", in: "HTTP/1.1 200 O\x00K\r\n\r\n", want: ErrBadStatusLine},
	{name: "bare LF status line", in: "HTTP/1.1 200 OK\n\r\n", want: ErrBadLineEnding},
	{name: "bare LF no reason", in: "HTTP/1.1 200\n\r\n", want: ErrBadLineEnding},
	{name: "status line too long", lim: Limits{MaxRequestLine: 20}, in: "HTTP/1.1 200 OKOKOKOKOK\r\n\r\n", want: ErrStatusLineTooLong},
	{name: "head too large", lim: Limits{MaxHeaderBytes: 30}, in: ok200("Server: abcdefgh\r\n"), want: ErrHeaderTooLarge},
	{name: "too many headers", lim: Limits{MaxHeaders: 1}, in: ok200("A: 1\r\nB: 2\r\n"), want: ErrTooManyHeaders},
	{name: "obs-fold", in: ok200("A: 1\r\n 2\r\n"), want: ErrObsFold},
	{name: "space before colon", in: ok200("A : 1\r\n"), want: ErrBadHeaderName},
	{name: "NUL in value", in: ok200("A: \x00\r\n"), want: ErrBadHeaderValue},
	{name: "cl and te", in: ok200("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"), want: ErrLengthAndChunked},
	{name: "cl conflict", in: ok200("Content-Length: 3\r\nContent-Length: 4\r\n"), want: ErrConflictingLength},
	{name: "cl bad", in: ok200("Content-Length: 3a\r\n"), want: ErrBadContentLength},
	{name: "te gzip", in: ok200("Transfer-Encoding: gzip\r\n"), want: ErrUnsupportedCoding},
	{name: "te chunked not last", in: ok200("Transfer-Encoding: chunked, gzip\r\n"), want: ErrBadTransferEncoding},
	{name: "te in 1.0", in: "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", want: ErrTransferEncodingHTTP10},
	{name: "incomplete too long", in: "HTTP/1.1 200 " + strings.Repeat("a", 9000), want: ErrStatusLineTooLong},
}

func TestParseResponse(t *testing.T) {
	for _, tc := range respCases {
		t.Run(tc.name, func(t *testing.T) {
			buf := []byte(tc.in)
			var r Response
			n, err := ParseResponse(buf, &r, tc.lim)
			if tc.want != nil {
				var e *Error
				if !errors.As(err, &e) || e.Status != 502 || e.Reason != tc.want.Reason || !errors.Is(err, tc.want) {
					t.Fatalf("err = %#v, want 502 %q", err, tc.want.Reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if n != r.HeadLen || !strings.HasSuffix(tc.in[:n], "\r\n\r\n") {
				t.Fatalf("n = %d, HeadLen = %d", n, r.HeadLen)
			}
			checkRespSubslices(t, buf, &r)
			if tc.check != nil {
				tc.check(t, &r)
			}
		})
	}
}

func TestResponseErrorsAre502(t *testing.T) {
	for f := fIncomplete + 1; f < nFaults; f++ {
		e := respErrors[f]
		if f == fLineTooLong {
			if e != ErrStatusLineTooLong {
				t.Errorf("fault %d: %#v", f, e)
			}
			continue
		}
		if e == nil || e.Status != 502 || !errors.Is(e, reqErrors[f]) {
			t.Errorf("fault %d: %#v", f, e)
		}
	}
}

func TestParseResponseIncremental(t *testing.T) {
	for _, tc := range respCases {
		t.Run(tc.name, func(t *testing.T) {
			checkResponseIncremental(t, []byte(tc.in), tc.lim)
			checkResponseIncremental(t, []byte(tc.in+"\x00garbage"), tc.lim)
		})
	}
}

func checkResponseIncremental(t *testing.T, buf []byte, lim Limits) {
	t.Helper()
	var whole, part Response
	n, err := ParseResponse(buf, &whole, lim)
	for k := 0; k <= len(buf); k++ {
		pn, perr := ParseResponse(buf[:k], &part, lim)
		if perr == ErrIncomplete {
			if err == nil && k >= n {
				t.Fatalf("prefix %d of a %d-byte head: incomplete", k, n)
			}
			continue
		}
		if perr != err || pn != n {
			t.Fatalf("prefix %d: (%d, %v), whole: (%d, %v)", k, pn, perr, n, err)
		}
		if err == nil && (k != n || !sameResponse(&whole, &part)) {
			t.Fatalf("prefix %d: %+v\nwhole (%d): %+v", k, part, n, whole)
		}
		return
	}
	if err != ErrIncomplete {
		t.Fatalf("every prefix incomplete, whole: %v", err)
	}
}
