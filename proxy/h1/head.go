package h1

// Limits bounds a message head. A zero (or negative) field takes its default.
type Limits struct {
	MaxRequestLine int // request or status line, without CRLF; default 8192
	MaxHeaderBytes int // whole head, start line and final CRLF included; default 16384
	MaxHeaders     int // header field lines; default 100
}

// Default limits, applied to zero fields of Limits.
const (
	DefaultMaxRequestLine = 8192
	DefaultMaxHeaderBytes = 16384
	DefaultMaxHeaders     = 100
)

func (l Limits) withDefaults() Limits {
	if l.MaxRequestLine <= 0 {
		l.MaxRequestLine = DefaultMaxRequestLine
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = DefaultMaxHeaders
	}
	return l
}

// Header is one header field line. Both slices point into the parsed buffer;
// Value has leading and trailing OWS removed and may be empty.
type Header struct {
	Name, Value []byte
}

// BodyKind says how the body of a message is delimited.
type BodyKind uint8

const (
	NoBody         BodyKind = iota // no body follows the head
	LengthBody                     // ContentLength (> 0) bytes follow
	ChunkedBody                    // chunked body follows; scan it with Chunked
	CloseDelimited                 // response body runs until the server closes
)

func (k BodyKind) String() string {
	switch k {
	case NoBody:
		return "none"
	case LengthBody:
		return "length"
	case ChunkedBody:
		return "chunked"
	case CloseDelimited:
		return "close-delimited"
	}
	return "invalid"
}

// headState accumulates what the header fields say about framing and the
// connection while they are scanned.
type headState struct {
	cl            int64
	clSeen        bool
	teSeen        bool // a Transfer-Encoding field was seen (and was valid)
	chunked       bool // chunked has been seen as a coding
	connClose     bool
	connKeepAlive bool
	connUpgrade   bool
	upgradeHdr    bool
	expect100     bool
	hosts         int
	host          []byte
}

// limitLine is the fault for a start-line scan that stopped at index i =
// min(len(buf), MaxHeaderBytes, MaxRequestLine) before the line's content was
// finished: a limit error when more bytes could not help, else fIncomplete.
// It depends only on i and the limits, never on bytes past i, which keeps
// results stable as the buffer grows.
func limitLine(i int, lim *Limits) fault {
	if i == lim.MaxRequestLine {
		return fLineTooLong
	}
	return limitHead(i, lim)
}

// limitHead is limitLine for scans bounded by min(len(buf), MaxHeaderBytes).
func limitHead(i int, lim *Limits) fault {
	if i == lim.MaxHeaderBytes {
		return fHeaderTooLarge
	}
	return fIncomplete
}

// parseFields scans header field lines from buf[i:] up to and including the
// empty line that ends the head, appending to *hdrs and recording framing in
// st. It returns the head length. hb is min(len(buf), MaxHeaderBytes).
func parseFields(buf []byte, i, hb int, lim *Limits, hdrs *[]Header, tokens *[][]byte, st *headState, req bool) (int, fault) {
	for {
		if i == hb {
			return 0, limitHead(i, lim)
		}
		switch buf[i] {
		case '\r':
			if i+1 == hb {
				return 0, limitHead(i+1, lim)
			}
			if buf[i+1] != '\n' {
				return 0, fBadLineEnding
			}
			return i + 2, fOK
		case '\n':
			return 0, fBadLineEnding
		case ' ', '\t':
			return 0, fObsFold
		}
		if len(*hdrs) >= lim.MaxHeaders {
			return 0, fTooManyHeaders
		}
		ns := i
		for i < hb && class[buf[i]]&cTchar != 0 {
			i++
		}
		if i == hb {
			return 0, limitHead(i, lim)
		}
		if buf[i] != ':' || i == ns {
			return 0, fBadHeaderName
		}
		name := buf[ns:i]
		i++
		for i < hb && isOWS(buf[i]) {
			i++
		}
		vs := i
		for i < hb && class[buf[i]]&cVchar != 0 {
			i++
		}
		if i == hb {
			return 0, limitHead(i, lim)
		}
		switch buf[i] {
		case '\r':
		case '\n':
			return 0, fBadLineEnding
		default:
			return 0, fBadHeaderValue
		}
		if i+1 == hb {
			return 0, limitHead(i+1, lim)
		}
		if buf[i+1] != '\n' {
			return 0, fBadHeaderValue // a CR inside the value
		}
		ve := i
		for ve > vs && isOWS(buf[ve-1]) {
			ve--
		}
		i += 2
		value := buf[vs:ve]
		*hdrs = append(*hdrs, Header{Name: name, Value: value})
		if f := st.field(name, value, tokens, req); f != fOK {
			return 0, f
		}
	}
}

// field interprets the header fields that affect framing, routing or the
// connection. Names are dispatched on length first: most fields cost one
// switch and no comparison.
func (st *headState) field(name, value []byte, tokens *[][]byte, req bool) fault {
	switch len(name) {
	case 4:
		if req && EqualFold(name, "host") {
			st.hosts++
			if st.hosts > 1 {
				return fDuplicateHost
			}
			for _, c := range value {
				if class[c]&cHost == 0 {
					return fBadHost
				}
			}
			st.host = value
		}
	case 6:
		if req && EqualFold(name, "expect") && EqualFold(value, "100-continue") {
			st.expect100 = true
		}
	case 7:
		if EqualFold(name, "upgrade") {
			st.upgradeHdr = true
		}
	case 10:
		if EqualFold(name, "connection") {
			return st.connection(value, tokens)
		}
	case 14:
		if EqualFold(name, "content-length") {
			return st.contentLength(value)
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			return st.transferEncoding(value)
		}
	}
	return fOK
}

// contentLength accepts 1*DIGIT, or a comma list of identical values (what
// an intermediary makes of duplicate fields); every occurrence in the head
// must agree. Empty elements are rejected.
func (st *headState) contentLength(value []byte) fault {
	for list, more := value, true; more; {
		var elem []byte
		elem, list, more = cutElement(list)
		n, ok := parseDigits(elem)
		if !ok {
			return fBadContentLength
		}
		if st.clSeen && n != st.cl {
			return fConflictingLength
		}
		st.cl, st.clSeen = n, true
	}
	return fOK
}

// transferEncoding accepts only "chunked", once, as the final coding across
// all Transfer-Encoding fields. An unknown coding before it is 501; anything
// after it (including a second chunked) is 400. Empty list elements, which
// RFC 9110 §5.6.1.2 lets a recipient ignore, are rejected here: a next hop
// that reads ",chunked" differently would frame the body differently.
func (st *headState) transferEncoding(value []byte) fault {
	for list, more := value, true; more; {
		var elem []byte
		elem, list, more = cutElement(list)
		switch {
		case len(elem) == 0, st.chunked:
			return fBadTransferEncoding
		case EqualFold(elem, "chunked"):
			st.chunked = true
		case isToken(elem):
			return fUnsupportedCoding
		default:
			return fBadTransferEncoding
		}
	}
	st.teSeen = true
	return fOK
}

// connection records the close, keep-alive and upgrade options and keeps the
// other tokens, which name hop-by-hop fields. Tokens naming Host or
// Content-Length are ignored: letting a client make the proxy strip those
// would change routing or framing downstream.
func (st *headState) connection(value []byte, tokens *[][]byte) fault {
	for list, more := value, true; more; {
		var elem []byte
		elem, list, more = cutElement(list)
		switch {
		case len(elem) == 0:
		case !isToken(elem):
			return fBadConnection
		case EqualFold(elem, "close"):
			st.connClose = true
		case EqualFold(elem, "keep-alive"):
			st.connKeepAlive = true
		case EqualFold(elem, "upgrade"):
			st.connUpgrade = true
		case EqualFold(elem, "host"), EqualFold(elem, "content-length"):
		default:
			*tokens = append(*tokens, elem)
		}
	}
	return fOK
}

func (st *headState) keepAlive(minor int) bool {
	return !st.connClose && (minor == 1 || st.connKeepAlive)
}

func (st *headState) contentLengthOr(def int64) int64 {
	if st.clSeen {
		return st.cl
	}
	return def
}

// parseVersion checks "HTTP/" DIGIT "." DIGIT at buf[i:], a scan bounded by
// end = min(len(buf), MaxHeaderBytes, MaxRequestLine), and returns the minor
// version (0 or 1).
func parseVersion(buf []byte, i, end int, lim *Limits) (int, fault) {
	const proto = "HTTP/"
	for k := 0; k < 8; k++ {
		if i+k == end {
			return 0, limitLine(i+k, lim)
		}
		c := buf[i+k]
		switch {
		case k < len(proto):
			if c != proto[k] {
				return 0, fBadVersion
			}
		case k == 6:
			if c != '.' {
				return 0, fBadVersion
			}
		default:
			if c < '0' || c > '9' {
				return 0, fBadVersion
			}
		}
	}
	if buf[i+5] != '1' || buf[i+7] > '1' {
		return 0, fVersionNotSupported
	}
	return int(buf[i+7] - '0'), fOK
}

// lineEnd checks the CRLF ending the start line at buf[i:]; hb is
// min(len(buf), MaxHeaderBytes).
func lineEnd(buf []byte, i, hb int, lim *Limits, bad fault) (int, fault) {
	if i == hb {
		return 0, limitHead(i, lim)
	}
	switch buf[i] {
	case '\r':
	case '\n':
		return 0, fBadLineEnding
	default:
		return 0, bad
	}
	if i+1 == hb {
		return 0, limitHead(i+1, lim)
	}
	if buf[i+1] != '\n' {
		return 0, fBadLineEnding
	}
	return i + 2, fOK
}

// isHopByHop reports whether a field must not be forwarded (RFC 9110
// §7.6.1): the fields that are connection-specific by definition, plus those
// named by Connection.
func isHopByHop(name []byte, tokens [][]byte) bool {
	switch len(name) {
	case 2:
		if EqualFold(name, "te") {
			return true
		}
	case 7:
		if EqualFold(name, "upgrade") {
			return true
		}
	case 10:
		if EqualFold(name, "connection") || EqualFold(name, "keep-alive") {
			return true
		}
	case 16:
		if EqualFold(name, "proxy-connection") {
			return true
		}
	case 17:
		if EqualFold(name, "transfer-encoding") {
			return true
		}
	}
	for _, t := range tokens {
		if len(t) == len(name) && equalFoldBytes(t, name) {
			return true
		}
	}
	return false
}

func equalFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}
