package h1

import (
	"bytes"
	"testing"
	"unsafe"
)

// within reports whether s is a sub-slice of buf[:end] (an empty s must
// still point into buf).
func within(s, buf []byte, end int) bool {
	if s == nil {
		return true
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return p >= base && p+uintptr(len(s)) <= base+uintptr(end)
}

type headView struct {
	headers []Header
	conn    [][]byte
	extra   [][]byte
	headLen int
}

func checkView(t *testing.T, buf []byte, v headView) {
	t.Helper()
	if v.headLen <= 0 || v.headLen > len(buf) {
		t.Fatalf("HeadLen %d, buffer %d", v.headLen, len(buf))
	}
	for _, h := range v.headers {
		if len(h.Name) == 0 || !within(h.Name, buf, v.headLen) || !within(h.Value, buf, v.headLen) || h.Value == nil {
			t.Fatalf("header %q: %q not a sub-slice of the head", h.Name, h.Value)
		}
	}
	for _, s := range append(v.conn, v.extra...) {
		if !within(s, buf, v.headLen) {
			t.Fatalf("%q is not a sub-slice of the head", s)
		}
	}
}

func checkSubslices(t *testing.T, buf []byte, headLen int, r *Request) {
	t.Helper()
	checkView(t, buf, headView{headers: r.Headers, conn: r.ConnTokens, extra: [][]byte{r.Method, r.Target, r.Host}, headLen: headLen})
	if len(r.Method) == 0 || len(r.Target) == 0 {
		t.Fatalf("empty method or target: %+v", r)
	}
}

func checkRespSubslices(t *testing.T, buf []byte, r *Response) {
	t.Helper()
	checkView(t, buf, headView{headers: r.Headers, conn: r.ConnTokens, extra: [][]byte{r.Reason}, headLen: r.HeadLen})
	if r.Reason == nil {
		t.Fatal("nil Reason")
	}
}

func sameHeaders(a, b []Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i].Name, b[i].Name) || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func sameTokens(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func sameRequest(a, b *Request) bool {
	return bytes.Equal(a.Method, b.Method) && bytes.Equal(a.Target, b.Target) && a.Minor == b.Minor &&
		sameHeaders(a.Headers, b.Headers) && a.HeadLen == b.HeadLen && a.ContentLength == b.ContentLength &&
		a.Chunked == b.Chunked && bytes.Equal(a.Host, b.Host) && (a.Host == nil) == (b.Host == nil) &&
		a.KeepAlive == b.KeepAlive && a.Upgrade == b.Upgrade && a.Expect100 == b.Expect100 &&
		sameTokens(a.ConnTokens, b.ConnTokens)
}

func sameResponse(a, b *Response) bool {
	return a.Minor == b.Minor && a.Status == b.Status && bytes.Equal(a.Reason, b.Reason) &&
		sameHeaders(a.Headers, b.Headers) && a.HeadLen == b.HeadLen && a.ContentLength == b.ContentLength &&
		a.Chunked == b.Chunked && a.KeepAlive == b.KeepAlive && a.Upgrade == b.Upgrade &&
		sameTokens(a.ConnTokens, b.ConnTokens)
}
