package h1

import (
	"hash/fnv"
	"testing"
)

// Limits small enough for fuzzed inputs to reach every limit path.
var fuzzLimits = []Limits{{}, {MaxRequestLine: 24, MaxHeaderBytes: 96, MaxHeaders: 4}}

func FuzzParseRequest(f *testing.F) {
	for _, tc := range reqCases {
		if len(tc.in) < 1024 {
			f.Add([]byte(tc.in))
		}
	}
	f.Add([]byte(benchRequest))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lim := range fuzzLimits {
			fuzzRequest(t, data, lim)
		}
	})
}

func fuzzRequest(t *testing.T, data []byte, lim Limits) {
	var whole, part Request
	n, err := ParseRequest(data, &whole, lim)
	if err == nil {
		l := lim.withDefaults()
		if n != whole.HeadLen || n > len(data) || n > l.MaxHeaderBytes || len(whole.Headers) > l.MaxHeaders {
			t.Fatalf("n %d, HeadLen %d, len %d, %d headers", n, whole.HeadLen, len(data), len(whole.Headers))
		}
		checkSubslices(t, data, n, &whole)
		if whole.Chunked && whole.ContentLength >= 0 {
			t.Fatal("both chunked and Content-Length")
		}
		if whole.Minor == 1 && whole.Host == nil {
			t.Fatal("HTTP/1.1 without Host")
		}
	} else if _, ok := err.(*Error); !ok && err != ErrIncomplete {
		t.Fatalf("unexpected error type %T", err)
	}
	// A prefix is either incomplete or already gives the whole answer; for a
	// success, exactly the prefixes shorter than the head are incomplete.
	for k := 0; k <= len(data); k++ {
		if skipPrefix(k, len(data), n) {
			continue
		}
		pn, perr := ParseRequest(data[:k], &part, lim)
		if perr == ErrIncomplete {
			if err == nil && k >= n {
				t.Fatalf("prefix %d of a %d-byte head: incomplete", k, n)
			}
			continue
		}
		if perr != err || pn != n {
			t.Fatalf("prefix %d: (%d, %v), whole: (%d, %v)", k, pn, perr, n, err)
		}
		if err == nil && !sameRequest(&whole, &part) {
			t.Fatalf("prefix %d: %+v\nwhole: %+v", k, part, whole)
		}
	}
}

// skipPrefix thins out the prefixes checked for long inputs, keeping the
// short ones, a stride through the rest, and those around the head's end n.
func skipPrefix(k, size, n int) bool {
	if size <= 256 || k <= 64 || k >= n-1 && k <= n+1 {
		return false
	}
	return k%(size/64) != 0
}

func FuzzParseResponse(f *testing.F) {
	for _, tc := range respCases {
		if len(tc.in) < 1024 {
			f.Add([]byte(tc.in))
		}
	}
	f.Add([]byte(benchResponse))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, lim := range fuzzLimits {
			fuzzResponse(t, data, lim)
		}
	})
}

func fuzzResponse(t *testing.T, data []byte, lim Limits) {
	var whole, part Response
	n, err := ParseResponse(data, &whole, lim)
	if err == nil {
		l := lim.withDefaults()
		if n != whole.HeadLen || n > len(data) || n > l.MaxHeaderBytes || len(whole.Headers) > l.MaxHeaders {
			t.Fatalf("n %d, HeadLen %d, len %d, %d headers", n, whole.HeadLen, len(data), len(whole.Headers))
		}
		checkRespSubslices(t, data, &whole)
		if whole.Status < 100 || whole.Status > 599 || whole.Chunked && whole.ContentLength >= 0 {
			t.Fatalf("got %+v", whole)
		}
	} else if e, ok := err.(*Error); err != ErrIncomplete && (!ok || e.Status != 502) {
		t.Fatalf("unexpected error %#v", err)
	}
	for k := 0; k <= len(data); k++ {
		if skipPrefix(k, len(data), n) {
			continue
		}
		pn, perr := ParseResponse(data[:k], &part, lim)
		if perr == ErrIncomplete {
			if err == nil && k >= n {
				t.Fatalf("prefix %d of a %d-byte head: incomplete", k, n)
			}
			continue
		}
		if perr != err || pn != n {
			t.Fatalf("prefix %d: (%d, %v), whole: (%d, %v)", k, pn, perr, n, err)
		}
		if err == nil && !sameResponse(&whole, &part) {
			t.Fatalf("prefix %d: %+v\nwhole: %+v", k, part, whole)
		}
	}
}

func FuzzChunked(f *testing.F) {
	for _, tc := range chunkCases {
		if len(tc.in) < 1024 {
			f.Add([]byte(tc.in))
		}
	}
	f.Add([]byte(benchChunked))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, done, err := scanSplit(data)
		if n > len(data) || done && err != nil || err == nil && !done && n != len(data) {
			t.Fatalf("(%d, %v, %v) for %d bytes", n, done, err, len(data))
		}
		if err != nil {
			if _, ok := err.(*Error); !ok || err == errShort {
				t.Fatalf("unexpected error %#v", err)
			}
			// Everything before the fault is a valid prefix.
			if pn, pdone, perr := scanSplit(data[:n]); pn != n || pdone || perr != nil {
				t.Fatalf("prefix before fault at %d: (%d, %v, %v)", n, pn, pdone, perr)
			}
		}
		if done {
			if pn, pdone, perr := scanSplit(data[:n]); pn != n || !pdone || perr != nil {
				t.Fatalf("body of %d bytes alone: (%d, %v, %v)", n, pn, pdone, perr)
			}
		}
		// Byte at a time, and pseudo-random pieces, agree with one shot.
		cuts := make([]int, 0, len(data))
		for i := 1; i < len(data); i++ {
			cuts = append(cuts, i)
		}
		if n2, done2, err2 := scanSplit(data, cuts...); n2 != n || done2 != done || err2 != err {
			t.Fatalf("byte at a time: (%d, %v, %v), one shot (%d, %v, %v)", n2, done2, err2, n, done, err)
		}
		h := fnv.New64a()
		h.Write(data)
		seed := h.Sum64()
		cuts = cuts[:0]
		for i := 0; i < len(data); {
			seed = seed*6364136223846793005 + 1442695040888963407
			i += 1 + int(seed>>59)
			if i < len(data) {
				cuts = append(cuts, i)
			}
		}
		if n2, done2, err2 := scanSplit(data, cuts...); n2 != n || done2 != done || err2 != err {
			t.Fatalf("cuts %v: (%d, %v, %v), one shot (%d, %v, %v)", cuts, n2, done2, err2, n, done, err)
		}
	})
}
