package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names of a CA kept in a directory.
const (
	CACertFile = "ca.crt" // PEM certificate, mode 0644
	CAKeyFile  = "ca.key" // PEM PKCS #8 private key, mode 0600
)

const (
	caValidity = 10 * 365 * 24 * time.Hour
	// backdate covers clocks that lag the issuing node's.
	backdate = time.Hour
	// Organization is the O of every certificate this package makes.
	Organization = "fulcrum"
)

// CA is the cluster's certificate authority: a self-signed ECDSA P-256
// certificate and its key. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

// NewCA makes a CA for the named cluster, valid for ten years from now.
func NewCA(clusterName string, now time.Time) (*CA, error) {
	if err := checkName("cluster name", clusterName); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject: pkix.Name{
			CommonName:         "fulcrum CA " + clusterName,
			Organization:       []string{Organization},
			OrganizationalUnit: []string{clusterName},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return parseCA(pemBlock("CERTIFICATE", der), keyPEM)
}

// LoadCA reads a CA that Save wrote to dir. It refuses a key file that group
// or others may read, a key that does not match the certificate, and a
// certificate that is not a CA.
func LoadCA(dir string) (*CA, error) {
	keyPath := filepath.Join(dir, CAKeyFile)
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load CA: %s has mode %#o; it must not be readable by group or others (chmod 600 %s)", keyPath, perm, keyPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ca, err := parseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA from %s: %w", dir, err)
	}
	return ca, nil
}

// parseCA builds a CA from its PEM certificate and key and checks that they
// belong together.
func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("certificate is not a CA")
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("CA key does not match the CA certificate")
	}
	return &CA{cert: cert, key: key, certPEM: pemBlock("CERTIFICATE", cert.Raw), keyPEM: keyPEM}, nil
}

// Save writes the CA to dir (created 0700 if missing) as CACertFile (0644)
// and CAKeyFile (0600), each replaced atomically. It refuses to overwrite a
// different CA: losing the cluster's CA locks every node out.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	for _, name := range []string{CACertFile, CAKeyFile} {
		old, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("save CA: %w", err)
		}
		if want := map[string][]byte{CACertFile: ca.certPEM, CAKeyFile: ca.keyPEM}[name]; !bytes.Equal(old, want) {
			return fmt.Errorf("save CA: %s already holds a different CA; refusing to overwrite it", filepath.Join(dir, name))
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, CAKeyFile), ca.keyPEM, 0o600); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CACertFile), ca.certPEM, 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// KeyPEM returns the CA private key in PEM (PKCS #8) form. Handle with care.
func (ca *CA) KeyPEM() []byte { return bytes.Clone(ca.keyPEM) }

// Certificate returns the parsed CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool that holds only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Fingerprint returns the SHA-256 of the CA certificate's DER, as 64
// lowercase hex digits: the pin a join token carries.
func (ca *CA) Fingerprint() string { return fingerprint(ca.cert.Raw) }

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseCAPEM parses a CA certificate received from a peer and checks that its
// fingerprint is the pinned one. It returns a pool holding only that CA.
func ParseCAPEM(caPEM []byte, pinnedFingerprint string) (*x509.CertPool, error) {
	pin, err := normalizeFingerprint(pinnedFingerprint)
	if err != nil {
		return nil, err
	}
	cert, err := parseCertPEM(caPEM)
	if err != nil {
		return nil, err
	}
	if got := fingerprint(cert.Raw); got != pin {
		return nil, fmt.Errorf("CA certificate fingerprint %s does not match the pinned %s", got, pin)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("pinned certificate is not a CA")
	}
	p := x509.NewCertPool()
	p.AddCert(cert)
	return p, nil
}

// Serial returns a certificate's serial number as the deny list spells it:
// lowercase hex, zero-padded to 32 digits (128 bits).
func Serial(cert *x509.Certificate) string { return serialString(cert.SerialNumber) }

func serialString(n *big.Int) string { return fmt.Sprintf("%032x", n) }

// newSerial returns a random, non-zero 128-bit serial number.
func newSerial() *big.Int {
	var b [16]byte
	for {
		rand.Read(b[:]) // never fails since Go 1.24
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n
		}
	}
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertPEM parses the first CERTIFICATE block of data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM CERTIFICATE block found")
		}
		if b.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return cert, nil
		}
	}
}

// parseKeyPEM parses an ECDSA key in PKCS #8 or SEC 1 PEM form.
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key block found")
	}
	switch b.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("private key is %T, want ECDSA", k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block is %q, want a private key", b.Type)
}

// writeFileAtomic writes data to a temporary file in path's directory with
// mode perm, syncs it and renames it over path, so that a crash leaves the old
// file or the new one, never a torn or briefly world-readable one.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // created 0600
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // best effort: make the rename durable
		d.Close()
	}
	return nil
}
