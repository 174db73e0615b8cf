package h1

import "errors"

// ErrIncomplete means the buffer holds a valid prefix of a message head: read
// more bytes and parse again.
var ErrIncomplete = errors.New("h1: incomplete message head")

// Error is a parse fault with the HTTP status the proxy should answer before
// closing the connection.
//
// All values are package-level and must not be modified; returning one does
// not allocate. Faults found by ParseRequest carry a 4xx or 5xx status for the
// client; the same faults found by ParseResponse carry 502 and the same Reason,
// and errors.Is matches them against either value.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return "h1: " + e.Reason }

// Is reports whether target is an *Error for the same fault, so that a
// response fault (502) matches the request-side variable of the same name.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Faults in message heads. ParseRequest returns these values; ParseResponse
// returns 502 twins with the same Reason.
var (
	ErrBadRequestLine         = &Error{400, "malformed request line"}
	ErrBadMethod              = &Error{400, "invalid method"}
	ErrBadTarget              = &Error{400, "invalid request target"}
	ErrBadVersion             = &Error{400, "malformed HTTP version"}
	ErrVersionNotSupported    = &Error{505, "HTTP version not supported"}
	ErrBadLineEnding          = &Error{400, "line not terminated by CRLF"}
	ErrRequestLineTooLong     = &Error{414, "request line too long"}
	ErrHeaderTooLarge         = &Error{431, "header section too large"}
	ErrTooManyHeaders         = &Error{431, "too many header fields"}
	ErrBadHeaderName          = &Error{400, "invalid header field name"}
	ErrBadHeaderValue         = &Error{400, "invalid header field value"}
	ErrObsFold                = &Error{400, "obsolete line folding"}
	ErrBadContentLength       = &Error{400, "invalid Content-Length"}
	ErrConflictingLength      = &Error{400, "conflicting Content-Length values"}
	ErrLengthAndChunked       = &Error{400, "both Content-Length and Transfer-Encoding"}
	ErrBadTransferEncoding    = &Error{400, "invalid Transfer-Encoding"}
	ErrUnsupportedCoding      = &Error{501, "unsupported transfer coding"}
	ErrTransferEncodingHTTP10 = &Error{400, "Transfer-Encoding in an HTTP/1.0 message"}
	ErrMissingHost            = &Error{400, "missing Host header"}
	ErrDuplicateHost          = &Error{400, "multiple Host headers"}
	ErrBadHost                = &Error{400, "invalid Host header"}
	ErrBadConnection          = &Error{400, "invalid Connection header"}

	// Response-only faults.
	ErrBadStatusLine     = &Error{502, "malformed status line"}
	ErrBadStatus         = &Error{502, "invalid status code"}
	ErrStatusLineTooLong = &Error{502, "status line too long"}
)

// Faults in chunked bodies. The proxy has usually forwarded the head by the
// time it sees one, so it can only close the connection; Status is what it
// would answer for a request body it has not forwarded yet.
var (
	ErrChunkSize       = &Error{400, "invalid chunk size line"}
	ErrChunkTooLarge   = &Error{400, "chunk size too large"}
	ErrChunkCRLF       = &Error{400, "missing CRLF after chunk data"}
	ErrChunkExt        = &Error{400, "invalid chunk extension"}
	ErrChunkExtTooLong = &Error{400, "chunk extension too long"}
	ErrTrailer         = &Error{400, "malformed trailer section"}
	ErrTrailerTooLarge = &Error{400, "trailer section too large"}
)

// fault is the internal result code of the head parsers: cheap to return,
// mapped to a request-side or response-side *Error at the API boundary.
type fault uint8

const (
	fOK fault = iota
	fIncomplete
	fBadRequestLine
	fBadMethod
	fBadTarget
	fBadVersion
	fVersionNotSupported
	fBadLineEnding
	fLineTooLong
	fHeaderTooLarge
	fTooManyHeaders
	fBadHeaderName
	fBadHeaderValue
	fObsFold
	fBadContentLength
	fConflictingLength
	fLengthAndChunked
	fBadTransferEncoding
	fUnsupportedCoding
	fTransferEncodingHTTP10
	fMissingHost
	fDuplicateHost
	fBadHost
	fBadConnection
	fBadStatusLine
	fBadStatus
	nFaults
)

var reqErrors = [nFaults]*Error{
	fBadRequestLine:         ErrBadRequestLine,
	fBadMethod:              ErrBadMethod,
	fBadTarget:              ErrBadTarget,
	fBadVersion:             ErrBadVersion,
	fVersionNotSupported:    ErrVersionNotSupported,
	fBadLineEnding:          ErrBadLineEnding,
	fLineTooLong:            ErrRequestLineTooLong,
	fHeaderTooLarge:         ErrHeaderTooLarge,
	fTooManyHeaders:         ErrTooManyHeaders,
	fBadHeaderName:          ErrBadHeaderName,
	fBadHeaderValue:         ErrBadHeaderValue,
	fObsFold:                ErrObsFold,
	fBadContentLength:       ErrBadContentLength,
	fConflictingLength:      ErrConflictingLength,
	fLengthAndChunked:       ErrLengthAndChunked,
	fBadTransferEncoding:    ErrBadTransferEncoding,
	fUnsupportedCoding:      ErrUnsupportedCoding,
	fTransferEncodingHTTP10: ErrTransferEncodingHTTP10,
	fMissingHost:            ErrMissingHost,
	fDuplicateHost:          ErrDuplicateHost,
	fBadHost:                ErrBadHost,
	fBadConnection:          ErrBadConnection,
	fBadStatusLine:          ErrBadStatusLine,
	fBadStatus:              ErrBadStatus,
}

// respErrors holds the 502 twins, built once from reqErrors.
var respErrors = func() (t [nFaults]*Error) {
	for f, e := range reqErrors {
		switch {
		case e == nil:
		case e.Status == 502:
			t[f] = e
		default:
			t[f] = &Error{502, e.Reason}
		}
	}
	t[fLineTooLong] = ErrStatusLineTooLong
	return t
}()

func (f fault) request() error {
	if f == fIncomplete {
		return ErrIncomplete
	}
	return reqErrors[f]
}

func (f fault) response() error {
	if f == fIncomplete {
		return ErrIncomplete
	}
	return respErrors[f]
}
