package h1

// Response is a parsed response head; see Request for the reuse contract.
type Response struct {
	Minor         int
	Status        int
	Reason        []byte
	Headers       []Header
	HeadLen       int
	ContentLength int64 // -1 when absent
	Chunked       bool
	KeepAlive     bool // persistent per the version and Connection options
	Upgrade       bool // 101 with Connection: upgrade and an Upgrade field
	ConnTokens    [][]byte
}

// ParseResponse parses the response head at the start of buf and returns its
// length. Faults are *Error values with Status 502 (the answer the client
// gets); errors.Is matches them against the request-side variables too.
// MaxRequestLine bounds the status line.
func ParseResponse(buf []byte, r *Response, lim Limits) (int, error) {
	lim = lim.withDefaults()
	if f := parseResponse(buf, r, &lim); f != fOK {
		return 0, f.response()
	}
	return r.HeadLen, nil
}

func parseResponse(buf []byte, r *Response, lim *Limits) fault {
	*r = Response{Headers: r.Headers[:0], ConnTokens: r.ConnTokens[:0], ContentLength: -1}
	hb := min(len(buf), lim.MaxHeaderBytes)
	end := min(hb, lim.MaxRequestLine)

	minor, f := parseVersion(buf, 0, end, lim)
	switch f {
	case fOK:
	case fBadVersion:
		return fBadStatusLine
	default:
		return f
	}
	r.Minor = minor
	i := 8
	if i == end {
		return limitLine(i, lim)
	}
	if buf[i] != ' ' {
		return fBadStatusLine
	}
	i++
	status := 0
	for k := 0; k < 3; k, i = k+1, i+1 {
		if i == end {
			return limitLine(i, lim)
		}
		c := buf[i]
		if c < '0' || c > '9' {
			return fBadStatus
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 || status > 599 {
		return fBadStatus
	}
	r.Status = status
	// The reason phrase may be empty, and the SP before it missing.
	if i == end {
		return limitLine(i, lim)
	}
	switch buf[i] {
	case ' ':
		i++
		rs := i
		for i < end && class[buf[i]]&cVchar != 0 {
			i++
		}
		if i == end {
			return limitLine(i, lim)
		}
		r.Reason = buf[rs:i]
	case '\r', '\n':
		r.Reason = buf[i:i]
	default:
		return fBadStatusLine
	}
	if i, f = lineEnd(buf, i, hb, lim, fBadStatusLine); f != fOK {
		return f
	}

	var st headState
	n, f := parseFields(buf, i, hb, lim, &r.Headers, &r.ConnTokens, &st, false)
	if f != fOK {
		return f
	}
	if st.teSeen {
		if minor == 0 {
			return fTransferEncodingHTTP10
		}
		if st.clSeen {
			return fLengthAndChunked
		}
	}
	r.HeadLen = n
	r.ContentLength = st.contentLengthOr(-1)
	r.Chunked = st.chunked
	r.KeepAlive = st.keepAlive(minor)
	r.Upgrade = status == 101 && st.connUpgrade && st.upgradeHdr
	return fOK
}

// BodyKind says how the response body is delimited, given the method of the
// request it answers (RFC 9112 §6.3): none for HEAD, for 1xx, 204 and 304,
// and for a 2xx to CONNECT (the connection becomes a tunnel); else chunked,
// Content-Length (none when 0), or until the server closes.
func (r *Response) BodyKind(reqMethod []byte) BodyKind {
	switch {
	case string(reqMethod) == "HEAD",
		r.Status < 200, r.Status == 204, r.Status == 304,
		r.Status < 300 && string(reqMethod) == "CONNECT":
		return NoBody
	case r.Chunked:
		return ChunkedBody
	case r.ContentLength > 0:
		return LengthBody
	case r.ContentLength == 0:
		return NoBody
	}
	return CloseDelimited
}

// IsHopByHop reports whether the field name must not be forwarded; see
// Request.IsHopByHop.
func (r *Response) IsHopByHop(name []byte) bool { return isHopByHop(name, r.ConnTokens) }
