package h1

// Limits of the chunked scanner.
const (
	MaxChunkExt       = 4096  // bytes after the chunk size on a size line
	MaxTrailerBytes   = 16384 // trailer section, final CRLF included
	maxChunkSize      = 1 << 62
	maxChunkSizeDigit = 32 // hex digits on a size line, leading zeros included
)

// Chunked validates a chunked body (RFC 9112 §7.1) as it streams past,
// without de-chunking it, and finds where it ends. The zero value is ready;
// Reset makes it ready for the next body. Faults are sticky.
type Chunked struct {
	state  uint8
	digits uint8  // hex digits on the current size line
	n      uint64 // chunk size being read, then data bytes still to come
	count  int    // extension bytes on the size line, or trailer bytes
	err    *Error
}

const (
	csSize         = iota // chunk-size hex digits
	csExtBWS              // after the size: BWS, then ';'
	csExt                 // chunk extensions, until CR
	csSizeLF              // CR of the size line seen
	csData                // chunk data
	csDataCR              // CRLF after chunk data
	csDataLF              //
	csTrailerStart        // start of a trailer field line or the final CRLF
	csTrailerName         //
	csTrailerValue        //
	csTrailerLF           // CR of a trailer field line seen
	csFinalLF             // CR of the final empty line seen
	csDone
)

// Reset prepares c for a new body.
func (c *Chunked) Reset() { *c = Chunked{} }

// Scan consumes p, the next body bytes as they arrive, and returns how many
// of them belong to the chunked body: all of p unless the body ends inside
// it, in which case done is true and p[n:] is the next message. After done,
// Scan returns (0, true, nil). On a fault, n is the offset of the offending
// byte and every later call returns the same error. Any split of the input
// across calls gives the same result.
func (c *Chunked) Scan(p []byte) (n int, done bool, err error) {
	if c.err != nil {
		return 0, false, c.err
	}
	if c.state == csDone {
		return 0, true, nil
	}
	i := 0
	for i < len(p) {
		b := p[i]
		switch c.state {
		case csData:
			k := uint64(len(p) - i)
			if k > c.n {
				k = c.n
			}
			i += int(k)
			if c.n -= k; c.n == 0 {
				c.state = csDataCR
			}
			continue
		case csSize:
			d, ok := unhex(b)
			switch {
			case ok:
				if c.digits++; c.digits > maxChunkSizeDigit {
					return c.fail(i, ErrChunkSize)
				}
				if c.n > maxChunkSize>>4 {
					return c.fail(i, ErrChunkTooLarge)
				}
				if c.n = c.n<<4 | d; c.n > maxChunkSize {
					return c.fail(i, ErrChunkTooLarge)
				}
			case c.digits == 0:
				return c.fail(i, ErrChunkSize)
			case b == '\r':
				c.state = csSizeLF
			case b == ';':
				c.state, c.count = csExt, 1
			case b == ' ' || b == '\t':
				c.state, c.count = csExtBWS, 1
			default:
				return c.fail(i, ErrChunkSize)
			}
		case csExtBWS:
			if c.count++; c.count > MaxChunkExt {
				return c.fail(i, ErrChunkExtTooLong)
			}
			switch b {
			case ' ', '\t':
			case ';':
				c.state = csExt
			default:
				return c.fail(i, ErrChunkExt)
			}
		case csExt:
			if b == '\r' {
				c.state = csSizeLF
				break
			}
			if c.count++; c.count > MaxChunkExt {
				return c.fail(i, ErrChunkExtTooLong)
			}
			if class[b]&cVchar == 0 {
				return c.fail(i, ErrChunkExt)
			}
		case csSizeLF:
			if b != '\n' {
				return c.fail(i, ErrChunkSize)
			}
			if c.n == 0 {
				c.state, c.count = csTrailerStart, 0
			} else {
				c.state = csData
			}
			c.digits = 0
		case csDataCR:
			if b != '\r' {
				return c.fail(i, ErrChunkCRLF)
			}
			c.state = csDataLF
		case csDataLF:
			if b != '\n' {
				return c.fail(i, ErrChunkCRLF)
			}
			c.state = csSize
		default: // trailer section
			if c.count++; c.count > MaxTrailerBytes {
				return c.fail(i, ErrTrailerTooLarge)
			}
			if !c.trailer(b) {
				return c.fail(i, ErrTrailer)
			}
			if c.state == csDone {
				return i + 1, true, nil
			}
		}
		i++
	}
	return i, c.state == csDone, nil
}

// trailer advances the trailer-section states by one byte.
func (c *Chunked) trailer(b byte) bool {
	switch c.state {
	case csTrailerStart:
		switch {
		case b == '\r':
			c.state = csFinalLF
		case class[b]&cTchar != 0:
			c.state = csTrailerName
		default: // includes obs-fold and bare LF
			return false
		}
	case csTrailerName:
		switch {
		case b == ':':
			c.state = csTrailerValue
		case class[b]&cTchar == 0:
			return false
		}
	case csTrailerValue:
		switch {
		case b == '\r':
			c.state = csTrailerLF
		case class[b]&cVchar == 0:
			return false
		}
	case csTrailerLF:
		if b != '\n' {
			return false
		}
		c.state = csTrailerStart
	case csFinalLF:
		if b != '\n' {
			return false
		}
		c.state = csDone
	default: // csDone: Scan returns before feeding more bytes
		return false
	}
	return true
}

func (c *Chunked) fail(i int, e *Error) (int, bool, error) {
	c.err = e
	return i, false, e
}

func unhex(b byte) (uint64, bool) {
	switch {
	case b >= '0' && b <= '9':
		return uint64(b - '0'), true
	case b >= 'a' && b <= 'f':
		return uint64(b - 'a' + 10), true
	case b >= 'A' && b <= 'F':
		return uint64(b - 'A' + 10), true
	}
	return 0, false
}
