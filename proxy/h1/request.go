package h1

// Request is a parsed request head. Slices point into the parsed buffer.
// Reuse one value per connection: ParseRequest truncates Headers and
// ConnTokens and appends, keeping their capacity, so the common path does
// not allocate. Fields are meaningful only after a nil error.
type Request struct {
	Method, Target []byte
	Minor          int      // 0 for HTTP/1.0, 1 for HTTP/1.1
	Headers        []Header // in received order, all of them
	HeadLen        int      // request line + header fields + final CRLF
	ContentLength  int64    // -1 when absent
	Chunked        bool     // Transfer-Encoding: chunked (the only coding accepted)
	Host           []byte   // Host field value, nil if absent; see Authority
	KeepAlive      bool     // persistent connection (RFC 9112 §9.3)
	Upgrade        bool     // HTTP/1.1, Connection: upgrade, and an Upgrade field
	Expect100      bool     // HTTP/1.1 and Expect: 100-continue
	// ConnTokens are the Connection options other than close, keep-alive and
	// upgrade: names of further hop-by-hop fields. Host and Content-Length
	// are never listed.
	ConnTokens [][]byte
}

// ParseRequest parses the request head at the start of buf and returns its
// length (also r.HeadLen). It returns ErrIncomplete when buf ends before the
// head does and no fault or exceeded limit has shown yet, or an *Error.
// Bytes after the head (the body or a pipelined request) are not looked at.
func ParseRequest(buf []byte, r *Request, lim Limits) (int, error) {
	lim = lim.withDefaults()
	if f := parseRequest(buf, r, &lim); f != fOK {
		return 0, f.request()
	}
	return r.HeadLen, nil
}

func parseRequest(buf []byte, r *Request, lim *Limits) fault {
	*r = Request{Headers: r.Headers[:0], ConnTokens: r.ConnTokens[:0], ContentLength: -1}
	hb := min(len(buf), lim.MaxHeaderBytes)
	end := min(hb, lim.MaxRequestLine)

	i := 0
	for i < end && class[buf[i]]&cTchar != 0 {
		i++
	}
	if i == end {
		return limitLine(i, lim)
	}
	if buf[i] != ' ' {
		if i == 0 || buf[i] == '\r' || buf[i] == '\n' {
			return fBadRequestLine
		}
		return fBadMethod
	}
	if i == 0 {
		return fBadRequestLine
	}
	r.Method = buf[:i]
	i++

	ts := i
	for i < end && class[buf[i]]&cTarget != 0 {
		i++
	}
	if i == end {
		return limitLine(i, lim)
	}
	if buf[i] != ' ' {
		if buf[i] == '\r' || buf[i] == '\n' {
			return fBadRequestLine
		}
		return fBadTarget
	}
	if i == ts {
		return fBadRequestLine
	}
	r.Target = buf[ts:i]
	i++

	minor, f := parseVersion(buf, i, end, lim)
	if f != fOK {
		return f
	}
	r.Minor = minor
	// After the version, so that "PRI * HTTP/2.0" gets 505.
	if f := checkTarget(r.Method, r.Target); f != fOK {
		return f
	}
	if i, f = lineEnd(buf, i+8, hb, lim, fBadVersion); f != fOK {
		return f
	}

	var st headState
	n, f := parseFields(buf, i, hb, lim, &r.Headers, &r.ConnTokens, &st, true)
	if f != fOK {
		return f
	}
	if minor == 1 && st.hosts == 0 {
		return fMissingHost
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
	r.Host = st.host
	r.KeepAlive = st.keepAlive(minor)
	r.Upgrade = minor == 1 && st.connUpgrade && st.upgradeHdr
	r.Expect100 = minor == 1 && st.expect100
	return fOK
}

// checkTarget checks the form of the request-target (RFC 9112 §3.2), whose
// bytes are already known to be visible ASCII or obs-text: origin-form
// ("/..."), absolute-form ("scheme:..."; an authority, if any, non-empty
// and without userinfo), authority-form (host:port, CONNECT only) or
// asterisk-form ("*", OPTIONS only). Anything else would be read
// differently by different servers.
func checkTarget(method, target []byte) fault {
	if string(method) == "CONNECT" {
		if !isAuthority(target) {
			return fBadTarget
		}
		return fOK
	}
	switch c := target[0]; {
	case c == '/':
		return fOK
	case c == '*':
		if len(target) == 1 && string(method) == "OPTIONS" {
			return fOK
		}
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		// scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":"
		for i, c := range target {
			switch {
			case c == ':':
				a := absAuthority(target[i+1:])
				if a != nil && (len(a) == 0 || !isAuthority(a)) {
					return fBadTarget
				}
				return fOK
			case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.':
			default:
				return fBadTarget
			}
		}
	}
	return fBadTarget
}

// absAuthority returns the authority of a hier-part ("//authority/path..."),
// or nil when there is none.
func absAuthority(hier []byte) []byte {
	if len(hier) < 2 || hier[0] != '/' || hier[1] != '/' {
		return nil
	}
	hier = hier[2:]
	for i, c := range hier {
		if c == '/' || c == '?' || c == '#' {
			return hier[:i]
		}
	}
	return hier
}

// isAuthority reports whether b holds only host and port characters (no
// userinfo, which RFC 9110 §4.2.4 says to treat as an error).
func isAuthority(b []byte) bool {
	for _, c := range b {
		if class[c]&cHost == 0 {
			return false
		}
	}
	return true
}

// Authority returns the authority the request is for, to route on: the
// target in authority-form (CONNECT); the authority of an absolute-form
// target, which takes precedence over Host (RFC 9112 §3.2.2); else Host,
// which is nil for an HTTP/1.0 request without one.
func (r *Request) Authority() []byte {
	t := r.Target
	switch {
	case string(r.Method) == "CONNECT":
		return t
	case len(t) == 0 || t[0] == '/' || t[0] == '*':
		return r.Host
	}
	for i, c := range t {
		if c == ':' {
			if a := absAuthority(t[i+1:]); a != nil {
				return a
			}
			break
		}
	}
	return r.Host
}

// BodyKind says how the request body is delimited: a request without
// Content-Length or Transfer-Encoding, or with Content-Length: 0, has none.
func (r *Request) BodyKind() BodyKind {
	switch {
	case r.Chunked:
		return ChunkedBody
	case r.ContentLength > 0:
		return LengthBody
	}
	return NoBody
}

// IsHopByHop reports whether the field name must not be forwarded: the
// connection-specific fields of RFC 9110 §7.6.1 (Connection, Keep-Alive,
// Proxy-Connection, TE, Transfer-Encoding, Upgrade) and any field named by
// a Connection option.
func (r *Request) IsHopByHop(name []byte) bool { return isHopByHop(name, r.ConnTokens) }
