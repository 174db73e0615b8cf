package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, err := NewCA("prod", now)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("not a path-length-0 CA: IsCA=%v MaxPathLen=%d usage=%v", c.IsCA, c.MaxPathLen, c.KeyUsage)
	}
	if c.PublicKeyAlgorithm != x509.ECDSA || c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("algorithms %v %v, want ECDSA P-256 with SHA-256", c.PublicKeyAlgorithm, c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if !c.NotAfter.Equal(now.Add(10 * 365 * 24 * time.Hour)) {
		t.Errorf("NotAfter = %v, want ten years after %v", c.NotAfter, now)
	}
	if c.Subject.CommonName != "fulcrum CA prod" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	sum := sha256.Sum256(c.Raw)
	if fp := ca.Fingerprint(); fp != hex.EncodeToString(sum[:]) || len(fp) != 64 {
		t.Errorf("Fingerprint = %q", fp)
	}
	if !bytes.Contains(ca.CertPEM(), []byte("BEGIN CERTIFICATE")) || !bytes.Contains(ca.KeyPEM(), []byte("BEGIN PRIVATE KEY")) {
		t.Error("CertPEM/KeyPEM are not PEM")
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 65)} {
		if _, err := NewCA(bad, now); err == nil {
			t.Errorf("NewCA(%q) succeeded", bad)
		}
	}
}

func TestCASaveLoad(t *testing.T) {
	ca := newTestCA(t, "prod")
	dir := filepath.Join(t.TempDir(), "pki")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{".": 0o700, CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %#o, want %#o", name, got, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temporary files left)", len(ents))
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Fingerprint() != ca.Fingerprint() || !bytes.Equal(loaded.KeyPEM(), ca.KeyPEM()) || !bytes.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Fatal("the loaded CA differs from the saved one")
	}
	// The loaded CA signs what the original CA's pool trusts.
	lb1 := issueNode(t, loaded, "lb1")
	if _, err := lb1.leaf(t).Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("certificate of the loaded CA: %v", err)
	}
	// Saving the same CA again is harmless; a different one is refused.
	if err := loaded.Save(dir); err != nil {
		t.Errorf("saving the same CA again: %v", err)
	}
	other := newTestCA(t, "prod")
	if err := other.Save(dir); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("saving another CA over it: %v", err)
	}
	if again, err := LoadCA(dir); err != nil || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("the CA changed after a refused save: %v", err)
	}
}

func TestLoadCARefusals(t *testing.T) {
	ca, other := newTestCA(t, "prod"), newTestCA(t, "prod")

	t.Run("missing", func(t *testing.T) {
		_, err := LoadCA(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadCA(missing) = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("key readable by others", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("LoadCA(0644 key) = %v, want a refusal naming chmod 600", err)
		}
	})
	t.Run("key of another CA", func(t *testing.T) {
		dir := t.TempDir()
		if err := ca.Save(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, CAKeyFile), other.KeyPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Errorf("LoadCA(mismatched key) = %v", err)
		}
	})
	t.Run("leaf instead of CA", func(t *testing.T) {
		dir := t.TempDir()
		lb1 := issueNode(t, ca, "lb1")
		os.WriteFile(filepath.Join(dir, CACertFile), lb1.certPEM, 0o644)
		os.WriteFile(filepath.Join(dir, CAKeyFile), lb1.keyPEM, 0o600)
		if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "not a CA") {
			t.Errorf("LoadCA(leaf) = %v", err)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, CACertFile), []byte("nope"), 0o644)
		os.WriteFile(filepath.Join(dir, CAKeyFile), ca.KeyPEM(), 0o600)
		if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "no PEM CERTIFICATE") {
			t.Errorf("LoadCA(garbage) = %v", err)
		}
	})
}

var serialRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestIssueNode(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, "prod")
	ips := []net.IP{net.ParseIP("10.0.0.11"), net.ParseIP("fd00::11")}
	certPEM, keyPEM, serial, err := ca.IssueNode("lb1", ips, []string{"lb1.example.net"}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "lb1" || !slices.Equal(c.Subject.OrganizationalUnit, []string{RoleNode}) {
		t.Errorf("subject %v", c.Subject)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || c.IsCA {
		t.Errorf("usages %v, IsCA %v", c.ExtKeyUsage, c.IsCA)
	}
	if !slices.Equal(c.DNSNames, []string{"lb1.example.net", "lb1"}) || len(c.IPAddresses) != 2 || !c.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	if !c.NotAfter.Equal(now.Add(2 * 365 * 24 * time.Hour).Truncate(time.Second)) {
		t.Errorf("NotAfter = %v, want two years from now", c.NotAfter)
	}
	if !serialRE.MatchString(serial) || serial != Serial(c) {
		t.Errorf("serial %q, certificate's %q", serial, Serial(c))
	}
	if c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial has %d bits", c.SerialNumber.BitLen())
	}
	if _, err := KeyPair(certPEM, keyPEM, ca.CertPEM()); err != nil {
		t.Errorf("KeyPair: %v", err)
	}
	if _, err := KeyPair(certPEM, keyPEM, newTestCA(t, "prod").CertPEM()); err == nil || !strings.Contains(err.Error(), "not issued by this CA") {
		t.Errorf("KeyPair(other CA) = %v", err)
	}
	if _, err := KeyPair(certPEM, ca.KeyPEM(), ca.CertPEM()); err == nil {
		t.Error("KeyPair accepted a key of another certificate")
	}

	seen := map[string]bool{serial: true}
	for range 50 {
		_, _, s, err := ca.IssueNode("lb1", nil, nil, now)
		if err != nil || seen[s] {
			t.Fatalf("serial %q repeated or error %v", s, err)
		}
		seen[s] = true
	}

	// A name that is no host name stays out of the SANs.
	certPEM, _, _, err = ca.IssueNode("lb_1.", nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := parseCertPEM(certPEM); len(c.DNSNames) != 0 {
		t.Errorf("DNS SANs %v for a name that is no host name", c.DNSNames)
	}

	for _, tc := range []struct {
		name string
		ips  []net.IP
		dns  []string
		want string
	}{
		{"", nil, nil, "node name is empty"},
		{"lb 1", nil, nil, "invalid character"},
		{"lb/1", nil, nil, "invalid character"},
		{strings.Repeat("a", 65), nil, nil, "longer than 64"},
		{"lb1", []net.IP{{1, 2, 3}}, nil, "invalid IP"},
		{"lb1", nil, []string{"bad name"}, "invalid DNS name"},
		{"lb1", nil, []string{"-bad.example"}, "invalid DNS name"},
	} {
		if _, _, _, err := ca.IssueNode(tc.name, tc.ips, tc.dns, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("IssueNode(%q, %v, %v) = %v, want %q", tc.name, tc.ips, tc.dns, err, tc.want)
		}
	}
}

func TestIssueWithinCAValidity(t *testing.T) {
	made := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := NewCA("prod", made)
	if err != nil {
		t.Fatal(err)
	}
	// Late in the CA's life: the certificate ends with the CA.
	late := made.Add(9*365*24*time.Hour + 200*24*time.Hour)
	certPEM, _, _, err := ca.IssueNode("lb1", nil, nil, late)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := parseCertPEM(certPEM); !c.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("NotAfter = %v, want the CA's %v", c.NotAfter, ca.Certificate().NotAfter)
	}
	// Outside it: refused.
	for _, at := range []time.Time{made.Add(-2 * time.Hour), made.Add(11 * 365 * 24 * time.Hour)} {
		if _, _, _, err := ca.IssueClient("alice", at); err == nil || !strings.Contains(err.Error(), "the cluster CA is valid from") {
			t.Errorf("IssueClient at %v = %v", at, err)
		}
	}
}

func TestIssueClient(t *testing.T) {
	ca := newTestCA(t, "prod")
	op := issueClient(t, ca, "alice")
	c := op.leaf(t)
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{RoleOperator}) {
		t.Errorf("subject %v", c.Subject)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("usages %v, want client auth only", c.ExtKeyUsage)
	}
	if len(c.DNSNames)+len(c.IPAddresses) != 0 {
		t.Errorf("SANs %v %v", c.DNSNames, c.IPAddresses)
	}
	if !serialRE.MatchString(op.serial) {
		t.Errorf("serial %q", op.serial)
	}
	verify := func(u x509.ExtKeyUsage) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{u}})
		return err
	}
	if err := verify(x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client auth: %v", err)
	}
	if err := verify(x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("an operator certificate verifies for server auth")
	}
	if _, _, _, err := ca.IssueClient("", time.Now()); err == nil {
		t.Error("IssueClient(\"\") succeeded")
	}
}
