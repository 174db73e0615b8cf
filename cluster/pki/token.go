package pki

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Sizes of the secrets this package makes and checks.
const (
	SecretSize    = 32 // bytes of the cluster secret
	GossipKeySize = 32 // bytes of the gossip key: AES-256
	NonceSize     = 32 // bytes of a join nonce; VerifyJoinProof refuses fewer than MinNonceSize
	MinNonceSize  = 16
)

// TokenPrefix starts every join token and names its format version.
const TokenPrefix = "fulcrum1"

// Labels that separate the keys derived from the cluster secret. Changing one
// breaks every cluster already formed.
const (
	gossipKeyLabel = "fulcrum/v1/gossip-key"
	joinProofLabel = "fulcrum/v1/join-proof"
	exporterLabel  = "EXPORTER-fulcrum-join-v1"
)

// NewSecret returns a new cluster secret: SecretSize random bytes.
func NewSecret() []byte {
	b := make([]byte, SecretSize)
	rand.Read(b) // never fails since Go 1.24
	return b
}

// NewNonce returns NonceSize random bytes, for a server that challenges a
// joiner instead of using ExportJoinNonce.
func NewNonce() []byte {
	b := make([]byte, NonceSize)
	rand.Read(b)
	return b
}

// Token is a parsed join token.
type Token struct {
	Secret        []byte // SecretSize bytes
	CAFingerprint string // 64 lowercase hex digits
}

// NewToken encodes a join token:
//
//	fulcrum1.<base64url(secret) without padding>.<caFingerprint, lowercase hex>
func NewToken(secret []byte, caFingerprint string) string {
	return TokenPrefix + "." + base64.RawURLEncoding.EncodeToString(secret) + "." + strings.ToLower(caFingerprint)
}

// Encode returns the token in the form NewToken makes. It holds the secret.
func (t Token) Encode() string { return NewToken(t.Secret, t.CAFingerprint) }

// String returns the token with its secret redacted, so that a token that
// reaches a log or an error message gives nothing away. Use Encode for the
// real thing.
func (t Token) String() string { return TokenPrefix + ".REDACTED." + t.CAFingerprint }

// GoString redacts the secret like String.
func (t Token) GoString() string {
	return fmt.Sprintf("pki.Token{Secret:REDACTED, CAFingerprint:%q}", t.CAFingerprint)
}

// ParseToken parses a join token made by NewToken. Surrounding white space
// (a copy and paste) is ignored; the fingerprint may be in either case.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("join token is empty")
	}
	parts := strings.Split(s, ".")
	if parts[0] != TokenPrefix {
		if strings.HasPrefix(parts[0], "fulcrum") {
			return Token{}, fmt.Errorf("join token version %q is not supported (want %s)", parts[0], TokenPrefix)
		}
		return Token{}, fmt.Errorf("not a fulcrum join token (want %s.<secret>.<CA fingerprint>)", TokenPrefix)
	}
	if len(parts) != 3 {
		return Token{}, fmt.Errorf("malformed join token: %d dot-separated parts, want 3 (%s.<secret>.<CA fingerprint>)", len(parts), TokenPrefix)
	}
	secret, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return Token{}, errors.New("malformed join token: the secret is not unpadded base64url")
	}
	if len(secret) != SecretSize {
		return Token{}, fmt.Errorf("malformed join token: the secret is %d bytes, want %d", len(secret), SecretSize)
	}
	fp, err := normalizeFingerprint(parts[2])
	if err != nil {
		return Token{}, fmt.Errorf("malformed join token: %w", err)
	}
	return Token{Secret: secret, CAFingerprint: fp}, nil
}

// normalizeFingerprint checks a SHA-256 fingerprint (64 hex digits) and
// returns it in lowercase.
func normalizeFingerprint(fp string) (string, error) {
	if len(fp) != 2*sha256.Size {
		return "", fmt.Errorf("the CA fingerprint is %d characters, want %d hex digits", len(fp), 2*sha256.Size)
	}
	if _, err := hex.DecodeString(fp); err != nil {
		return "", errors.New("the CA fingerprint is not hexadecimal")
	}
	return strings.ToLower(fp), nil
}

// derive returns n bytes derived from the cluster secret for one purpose.
func derive(secret []byte, label string, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, label, n)
	if err != nil {
		panic("pki: hkdf: " + err.Error()) // only for n > 255*32, never here
	}
	return k
}

// GossipKey derives memberlist's AES-256 key from the cluster secret
// (HKDF-SHA256 with a fixed label), so that every member computes the same
// key and the key is useless for anything else.
func GossipKey(secret []byte) []byte { return derive(secret, gossipKeyLabel, GossipKeySize) }

// JoinProof returns the proof that a joiner knows the cluster secret:
// HMAC-SHA256, under a key derived from the secret, of the node name and the
// nonce (each length-prefixed, so that no two pairs read alike).
func JoinProof(secret []byte, nodeName string, nonce []byte) []byte {
	m := hmac.New(sha256.New, derive(secret, joinProofLabel, sha256.Size))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(nodeName)))
	m.Write(n[:])
	m.Write([]byte(nodeName))
	binary.BigEndian.PutUint32(n[:], uint32(len(nonce)))
	m.Write(n[:])
	m.Write(nonce)
	return m.Sum(nil)
}

// VerifyJoinProof reports, in constant time, whether proof is JoinProof
// (secret, nodeName, nonce). It refuses a secret that is not SecretSize
// bytes and a nonce shorter than MinNonceSize, which could be replayed.
func VerifyJoinProof(secret []byte, nodeName string, nonce, proof []byte) bool {
	if len(secret) != SecretSize || len(nonce) < MinNonceSize {
		return false
	}
	return hmac.Equal(JoinProof(secret, nodeName, nonce), proof)
}

// ExportJoinNonce derives the join nonce from a TLS 1.3 connection's keying
// material (RFC 8446 section 7.5). Both ends of one connection get the same
// NonceSize bytes, which no other connection shares, so a proof bound to it
// cannot be replayed elsewhere and no challenge round trip is needed. The
// server calls it with the http.Request's TLS field, the client with its
// tls.Conn's ConnectionState.
func ExportJoinNonce(cs *tls.ConnectionState) ([]byte, error) {
	if cs == nil || !cs.HandshakeComplete {
		return nil, errors.New("join nonce: the TLS handshake is not complete")
	}
	if cs.Version < tls.VersionTLS13 {
		return nil, errors.New("join nonce: TLS 1.3 is required")
	}
	return cs.ExportKeyingMaterial(exporterLabel, nil, NonceSize)
}
