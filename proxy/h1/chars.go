package h1

// Character classes, one lookup per byte.
const (
	cTchar  = 1 << iota // token: ALPHA DIGIT and !#$%&'*+-.^_`|~
	cVchar              // field value or reason phrase: HTAB SP VCHAR obs-text
	cTarget             // request-target: VCHAR obs-text
	cHost               // Host: unreserved pct-encoded sub-delims ":" "[" "]"
)

var class = func() (t [256]uint8) {
	const tokenPunct = "!#$%&'*+-.^_`|~"
	const hostPunct = "-._~%!$&'()*+,;=:[]"
	for i := range t {
		c := byte(i)
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		switch {
		case c == '\t' || c == ' ':
			t[i] = cVchar
		case c > ' ' && c < 0x7f, c >= 0x80:
			t[i] = cVchar | cTarget
		}
		if alnum || c < 0x80 && indexByte(tokenPunct, c) >= 0 {
			t[i] |= cTchar
		}
		if alnum || c < 0x80 && indexByte(hostPunct, c) >= 0 {
			t[i] |= cHost
		}
	}
	return t
}()

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// EqualFold reports whether a and b are equal under ASCII case folding. It
// does not allocate and does not fold non-ASCII bytes.
func EqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if class[c]&cTchar == 0 {
			return false
		}
	}
	return true
}

func isOWS(c byte) bool { return c == ' ' || c == '\t' }

func trimOWS(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && isOWS(b[i]) {
		i++
	}
	for j > i && isOWS(b[j-1]) {
		j--
	}
	return b[i:j]
}

// cutElement splits a comma-separated list value at its first comma and
// returns the first element with OWS trimmed (possibly empty), the rest, and
// whether there was a comma, i.e. whether another element follows.
func cutElement(list []byte) (elem, rest []byte, more bool) {
	for i, c := range list {
		if c == ',' {
			return trimOWS(list[:i]), list[i+1:], true
		}
	}
	return trimOWS(list), nil, false
}

// parseDigits parses a non-empty run of ASCII digits into a non-negative
// int64, rejecting anything else and overflow.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	const max = 1<<63 - 1
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (max-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
