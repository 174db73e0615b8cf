// Package h1 parses HTTP/1.1 message heads and scans chunked bodies for the
// proxy's hot path.
//
// The parsers are strict (RFC 9112, with the usual anti-smuggling rules),
// allocation-free when the caller reuses its Request or Response value, and
// never copy: every []byte they return is a sub-slice of the input buffer, so
// it is valid only as long as that buffer is.
//
// They are also stateless. The proxy reads into its buffer and calls
// ParseRequest or ParseResponse on everything it has so far; ErrIncomplete
// means "read more and call again". A result other than ErrIncomplete does not
// change when more bytes are appended: limits are enforced on incomplete input
// too, and faults are reported in the order of the bytes that reveal them, so
// feeding a message byte by byte gives the same answer as feeding it whole.
//
// Chunked bodies are not de-chunked: Chunked validates the encoding as it
// streams past and says where the body ends, and the proxy forwards the bytes
// verbatim.
package h1
