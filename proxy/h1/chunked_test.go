package h1

import (
	"strings"
	"testing"
)

type chunkCase struct {
	name string
	in   string
	want error // nil: a complete body of exactly len(in) bytes
	// incomplete: a valid prefix (want nil, done false)
	incomplete bool
}

var chunkCases = []chunkCase{
	{name: "empty body", in: "0\r\n\r\n"},
	{name: "one chunk", in: "5\r\nhello\r\n0\r\n\r\n"},
	{name: "two chunks", in: "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
	{name: "hex sizes", in: "a\r\n0123456789\r\nA\r\n0123456789\r\n0\r\n\r\n"},
	{name: "leading zeros", in: "0005\r\nhello\r\n000\r\n\r\n"},
	{name: "data with CRLF inside", in: "4\r\n\r\n\r\n\r\n0\r\n\r\n"},
	{name: "extension", in: "5;name=value;q=\"a b\"\r\nhello\r\n0;last\r\n\r\n"},
	{name: "extension BWS", in: "5 \t; name\r\nhello\r\n0\r\n\r\n"},
	{name: "trailers", in: "5\r\nhello\r\n0\r\nExpires: never\r\nX-Sum:\tabc \r\n\r\n"},
	{name: "max size", in: "4000000000000000\r\n", incomplete: true},
	{name: "extension at limit", in: "1;" + strings.Repeat("x", MaxChunkExt-1) + "\r\na\r\n0\r\n\r\n"},
	{name: "trailers at limit", in: "0\r\nX: " + strings.Repeat("v", MaxTrailerBytes-7) + "\r\n\r\n"},
	{name: "incomplete data", in: "5\r\nhel", incomplete: true},
	{name: "incomplete trailer", in: "0\r\nX: y\r\n", incomplete: true},

	{name: "empty size", in: "\r\nhello\r\n", want: ErrChunkSize},
	{name: "non-hex size", in: "5g\r\nhello\r\n0\r\n\r\n", want: ErrChunkSize},
	{name: "0x prefix", in: "0x5\r\nhello\r\n0\r\n\r\n", want: ErrChunkSize},
	{name: "negative size", in: "-5\r\nhello\r\n", want: ErrChunkSize},
	{name: "leading space", in: " 5\r\nhello\r\n", want: ErrChunkSize},
	{name: "bare LF size line", in: "5\nhello\r\n0\r\n\r\n", want: ErrChunkSize},
	{name: "bare CR size line", in: "5\rhello\r\n0\r\n\r\n", want: ErrChunkSize},
	{name: "too many digits", in: strings.Repeat("0", 33) + "1\r\n", want: ErrChunkSize},
	{name: "size overflow", in: "4000000000000001\r\n", want: ErrChunkTooLarge},
	{name: "size overflow 64 bit", in: "10000000000000000\r\n", want: ErrChunkTooLarge},
	{name: "size overflow huge", in: "ffffffffffffffffff\r\n", want: ErrChunkTooLarge},
	{name: "data too long", in: "5\r\nhello!\r\n0\r\n\r\n", want: ErrChunkCRLF},
	{name: "data LF only", in: "5\r\nhello\n0\r\n\r\n", want: ErrChunkCRLF},
	{name: "data CR only", in: "5\r\nhello\r0\r\n\r\n", want: ErrChunkCRLF},
	{name: "space then garbage", in: "5 x\r\nhello\r\n", want: ErrChunkExt},
	{name: "CTL in extension", in: "5;a=\x01\r\nhello\r\n", want: ErrChunkExt},
	{name: "LF in extension", in: "5;a\nhello\r\n", want: ErrChunkExt},
	{name: "NUL in extension", in: "5;\x00\r\nhello\r\n", want: ErrChunkExt},
	{name: "extension too long", in: "1;" + strings.Repeat("x", MaxChunkExt) + "\r\na\r\n0\r\n\r\n", want: ErrChunkExtTooLong},
	{name: "BWS too long", in: "1" + strings.Repeat(" ", MaxChunkExt+1) + ";\r\n", want: ErrChunkExtTooLong},
	{name: "trailer obs-fold", in: "0\r\nX: a\r\n b\r\n\r\n", want: ErrTrailer},
	{name: "trailer no colon", in: "0\r\nX\r\n\r\n", want: ErrTrailer},
	{name: "trailer space before colon", in: "0\r\nX : a\r\n\r\n", want: ErrTrailer},
	{name: "trailer bare LF", in: "0\r\nX: a\n\r\n", want: ErrTrailer},
	{name: "trailer CTL", in: "0\r\nX: \x7f\r\n\r\n", want: ErrTrailer},
	{name: "final bare LF", in: "0\r\n\n", want: ErrTrailer},
	{name: "final CR junk", in: "0\r\n\rX", want: ErrTrailer},
	{name: "trailers too large", in: "0\r\nX: " + strings.Repeat("v", MaxTrailerBytes-6) + "\r\n\r\n", want: ErrTrailerTooLarge},
}

// scanSplit feeds in to a fresh Chunked in pieces cut at the given offsets
// and returns the total bytes accepted, done and the error.
func scanSplit(in []byte, cuts ...int) (int, bool, error) {
	var c Chunked
	total, from := 0, 0
	for _, to := range append(cuts, len(in)) {
		n, done, err := c.Scan(in[from:to])
		total += n
		if err != nil || done {
			return total, done, err
		}
		if n != to-from {
			return total, done, errShort
		}
		from = to
	}
	return total, false, nil
}

var errShort = &Error{0, "test: Scan stopped early without done"}

func TestChunked(t *testing.T) {
	for _, tc := range chunkCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			next := "GET / HTTP/1.1\r\n"
			full := append(in[:len(in):len(in)], next...)

			if tc.incomplete {
				full = in
			}
			n, done, err := scanSplit(full)
			switch {
			case tc.want != nil:
				if err != tc.want {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if n >= len(in) {
					t.Fatalf("fault reported at %d, past the body", n)
				}
			case tc.incomplete:
				if err != nil || done || n != len(in) {
					t.Fatalf("got (%d, %v, %v) for a valid prefix", n, done, err)
				}
			default:
				if err != nil || !done || n != len(in) {
					t.Fatalf("got (%d, %v, %v), want (%d, true, nil)", n, done, err, len(in))
				}
			}

			// Every split point, and byte at a time, agree with one shot.
			// (Long inputs: the ends and a stride through the middle.)
			for k := 0; k <= len(full); k++ {
				if k > 300 && k < len(full)-300 && k%97 != 0 {
					continue
				}
				n2, done2, err2 := scanSplit(full, k)
				if n2 != n || done2 != done || err2 != err {
					t.Fatalf("split at %d: (%d, %v, %v), one shot (%d, %v, %v)", k, n2, done2, err2, n, done, err)
				}
			}
			cuts := make([]int, len(full))
			for i := range cuts {
				cuts[i] = i
			}
			if n2, done2, err2 := scanSplit(full, cuts...); n2 != n || done2 != done || err2 != err {
				t.Fatalf("byte at a time: (%d, %v, %v), one shot (%d, %v, %v)", n2, done2, err2, n, done, err)
			}
		})
	}
}

func TestChunkedStickyAndReset(t *testing.T) {
	var c Chunked
	if _, _, err := c.Scan([]byte("z")); err != ErrChunkSize {
		t.Fatalf("err = %v", err)
	}
	if n, done, err := c.Scan([]byte("0\r\n\r\n")); n != 0 || done || err != ErrChunkSize {
		t.Fatalf("after fault: (%d, %v, %v)", n, done, err)
	}
	c.Reset()
	if n, done, err := c.Scan([]byte("0\r\n\r\nrest")); n != 5 || !done || err != nil {
		t.Fatalf("after Reset: (%d, %v, %v)", n, done, err)
	}
	if n, done, err := c.Scan([]byte("more")); n != 0 || !done || err != nil {
		t.Fatalf("after done: (%d, %v, %v)", n, done, err)
	}
}

func TestChunkedLargeChunk(t *testing.T) {
	var c Chunked
	if n, done, err := c.Scan([]byte("4000000000000000\r\n")); n != 18 || done || err != nil {
		t.Fatalf("(%d, %v, %v)", n, done, err)
	}
	buf := make([]byte, 1<<16)
	for range 16 {
		if n, done, err := c.Scan(buf); n != len(buf) || done || err != nil {
			t.Fatalf("(%d, %v, %v)", n, done, err)
		}
	}
}
