package pki

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

const testFP = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestTokenRoundTrip(t *testing.T) {
	secret := NewSecret()
	if len(secret) != SecretSize {
		t.Fatalf("NewSecret: %d bytes", len(secret))
	}
	if bytes.Equal(secret, NewSecret()) {
		t.Fatal("two secrets are equal")
	}
	ca := newTestCA(t, "prod")
	s := NewToken(secret, ca.Fingerprint())
	if want := 8 + 1 + 43 + 1 + 64; len(s) != want || !strings.HasPrefix(s, "fulcrum1.") {
		t.Errorf("token %q: %d characters, want %d starting fulcrum1.", s, len(s), want)
	}
	tok, err := ParseToken(s)
	if err != nil {
		t.Fatalf("ParseToken(%q): %v", s, err)
	}
	if !bytes.Equal(tok.Secret, secret) || tok.CAFingerprint != ca.Fingerprint() {
		t.Errorf("ParseToken = %x %s; want %x %s", tok.Secret, tok.CAFingerprint, secret, ca.Fingerprint())
	}
	if tok.Encode() != s {
		t.Errorf("Encode = %q, want %q", tok.Encode(), s)
	}
	// A copy and paste with white space and an upper-case fingerprint.
	up := s[:strings.LastIndexByte(s, '.')+1] + strings.ToUpper(ca.Fingerprint())
	tok2, err := ParseToken(" " + up + "\n")
	if err != nil || tok2.CAFingerprint != ca.Fingerprint() || !bytes.Equal(tok2.Secret, secret) {
		t.Errorf("ParseToken(upper-case fingerprint, white space) = %v, %v", tok2, err)
	}
}

func TestTokenNeverPrintsItsSecret(t *testing.T) {
	secret := NewSecret()
	tok, err := ParseToken(NewToken(secret, testFP))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString(secret)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, tok)
		if strings.Contains(out, enc) || strings.Contains(out, fmt.Sprint(secret[:4])) || !strings.Contains(out, "REDACTED") {
			t.Errorf("Sprintf(%s, token) = %q: the secret shows", verb, out)
		}
	}
}

func TestParseTokenMalformed(t *testing.T) {
	good := base64.RawURLEncoding.EncodeToString(make([]byte, SecretSize))
	short := base64.RawURLEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct{ in, want string }{
		{"", "join token is empty"},
		{"   \n", "join token is empty"},
		{"hello", "not a fulcrum join token"},
		{"K10abc::server:xyz", "not a fulcrum join token"},
		{"fulcrum2." + good + "." + testFP, `version "fulcrum2" is not supported`},
		{"fulcrum1", "1 dot-separated parts, want 3"},
		{"fulcrum1." + good, "2 dot-separated parts, want 3"},
		{"fulcrum1." + good + "." + testFP + ".x", "4 dot-separated parts, want 3"},
		{"fulcrum1.!!!." + testFP, "not unpadded base64url"},
		{"fulcrum1." + base64.URLEncoding.EncodeToString(make([]byte, SecretSize)) + "." + testFP, "not unpadded base64url"},
		{"fulcrum1." + base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, SecretSize)) + "." + testFP, "not unpadded base64url"},
		{"fulcrum1." + short + "." + testFP, "the secret is 16 bytes, want 32"},
		{"fulcrum1.." + testFP, "the secret is 0 bytes, want 32"},
		{"fulcrum1." + good + "." + testFP[:40], "fingerprint is 40 characters, want 64 hex digits"},
		{"fulcrum1." + good + ".", "fingerprint is 0 characters"},
		{"fulcrum1." + good + "." + strings.Repeat("zz", 32), "fingerprint is not hexadecimal"},
	} {
		_, err := ParseToken(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseToken(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
		if err != nil && tc.in != "" && len(tc.in) > 20 && strings.Contains(err.Error(), tc.in) {
			t.Errorf("ParseToken error repeats the token: %v", err)
		}
	}
}

func TestJoinProof(t *testing.T) {
	secret, other := NewSecret(), NewSecret()
	nonce, nonce2 := NewNonce(), NewNonce()
	proof := JoinProof(secret, "lb2", nonce)
	if len(proof) != sha256.Size {
		t.Fatalf("proof is %d bytes", len(proof))
	}
	if !bytes.Equal(proof, JoinProof(secret, "lb2", nonce)) {
		t.Fatal("JoinProof is not deterministic")
	}
	tampered := bytes.Clone(proof)
	tampered[0] ^= 1
	for _, tc := range []struct {
		name   string
		secret []byte
		node   string
		nonce  []byte
		proof  []byte
		want   bool
	}{
		{"right", secret, "lb2", nonce, proof, true},
		{"wrong secret", other, "lb2", nonce, proof, false},
		{"wrong name", secret, "lb3", nonce, proof, false},
		{"replayed with another nonce", secret, "lb2", nonce2, proof, false},
		{"tampered", secret, "lb2", nonce, tampered, false},
		{"truncated", secret, "lb2", nonce, proof[:16], false},
		{"empty proof", secret, "lb2", nonce, nil, false},
		{"short secret", secret[:16], "lb2", nonce, JoinProof(secret[:16], "lb2", nonce), false},
		{"short nonce", secret, "lb2", nonce[:8], JoinProof(secret, "lb2", nonce[:8]), false},
		{"empty nonce", secret, "lb2", nil, JoinProof(secret, "lb2", nil), false},
		{"minimum nonce", secret, "lb2", nonce[:MinNonceSize], JoinProof(secret, "lb2", nonce[:MinNonceSize]), true},
	} {
		if got := VerifyJoinProof(tc.secret, tc.node, tc.nonce, tc.proof); got != tc.want {
			t.Errorf("%s: VerifyJoinProof = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Moving a byte between the name and the nonce changes the proof.
	if bytes.Equal(JoinProof(secret, "lb2x", nonce), JoinProof(secret, "lb2", append([]byte("x"), nonce...))) {
		t.Fatal("name and nonce are ambiguous in the proof")
	}
	// The proof is not a plain HMAC under the secret (which would make the
	// secret's other uses and this one interchangeable).
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("lb2"))
	m.Write(nonce)
	if bytes.Equal(m.Sum(nil), proof) {
		t.Fatal("proof is keyed by the raw secret")
	}
}

// hkdfRFC5869 is HKDF-SHA256 written out from RFC 5869, for n <= 32, with an
// empty salt: the reference GossipKey is checked against.
func hkdfRFC5869(secret []byte, info string) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size))
	ext.Write(secret)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write([]byte(info))
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

func TestGossipKey(t *testing.T) {
	secret := make([]byte, SecretSize)
	for i := range secret {
		secret[i] = byte(i)
	}
	k := GossipKey(secret)
	if len(k) != GossipKeySize {
		t.Fatalf("GossipKey: %d bytes, want %d (AES-256)", len(k), GossipKeySize)
	}
	if want := hkdfRFC5869(secret, "fulcrum/v1/gossip-key"); !bytes.Equal(k, want) {
		t.Errorf("GossipKey = %x, want HKDF-SHA256 %x", k, want)
	}
	// Pinned: every member of a cluster, whatever its version, must derive the
	// same key. Changing this value breaks rolling upgrades.
	const kat = "088548d752ffdb539ca17c3d7436dad7cf85a0b1d5b43885b7597a4e5d8dd1e5"
	if got := hex.EncodeToString(k); got != kat {
		t.Errorf("GossipKey(00..1f) = %s, want %s", got, kat)
	}
	if !bytes.Equal(k, GossipKey(bytes.Clone(secret))) {
		t.Error("GossipKey is not deterministic")
	}
	if bytes.Equal(k, GossipKey(NewSecret())) {
		t.Error("two secrets give the same gossip key")
	}
	if bytes.Equal(k, secret) || bytes.Equal(k, derive(secret, joinProofLabel, 32)) {
		t.Error("the gossip key equals the secret or the join proof key")
	}
}
