package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Roles, written as the OU of a certificate this package issues.
const (
	RoleNode     = "node"     // a cluster member: server and client auth
	RoleOperator = "operator" // an operator's remote CLI: client auth only
)

const leafValidity = 2 * 365 * 24 * time.Hour

// IssueNode issues a certificate for the cluster member name, good for both
// server and client auth for two years (never past the CA's own expiry). Its
// CN is name; its SANs are ips, dnsNames and name itself when name is a valid
// host name, so that a peer may verify it by node name. It returns the
// certificate and a fresh P-256 key in PEM form, and the serial as Serial
// spells it.
func (ca *CA) IssueNode(name string, ips []net.IP, dnsNames []string, now time.Time) (certPEM, keyPEM []byte, serial string, err error) {
	if err := checkName("node name", name); err != nil {
		return nil, nil, "", err
	}
	for _, ip := range ips {
		if ip == nil || (ip.To4() == nil && len(ip) != net.IPv6len) {
			return nil, nil, "", fmt.Errorf("node %s: invalid IP address %v", name, ip)
		}
	}
	dns := slices.Clone(dnsNames)
	for _, d := range dns {
		if !isHostname(d) {
			return nil, nil, "", fmt.Errorf("node %s: invalid DNS name %q", name, d)
		}
	}
	if isHostname(name) && !slices.Contains(dns, name) {
		dns = append(dns, name)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{Organization}, OrganizationalUnit: []string{RoleNode}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: slices.Clone(ips),
		DNSNames:    dns,
	}
	return ca.issue(tmpl, now)
}

// IssueClient issues a certificate for an operator's remote CLI (OU
// operator, CN name), good for client auth only, for two years (never past
// the CA's own expiry). It returns what IssueNode returns.
func (ca *CA) IssueClient(name string, now time.Time) (certPEM, keyPEM []byte, serial string, err error) {
	if err := checkName("operator name", name); err != nil {
		return nil, nil, "", err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{Organization}, OrganizationalUnit: []string{RoleOperator}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, now)
}

// issue completes tmpl with serial and validity, signs it with a fresh key.
func (ca *CA) issue(tmpl *x509.Certificate, now time.Time) (certPEM, keyPEM []byte, serial string, err error) {
	if now.Before(ca.cert.NotBefore) || !now.Before(ca.cert.NotAfter) {
		return nil, nil, "", fmt.Errorf("the cluster CA is valid from %s to %s, not at %s",
			ca.cert.NotBefore.UTC().Format(time.RFC3339), ca.cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", fmt.Errorf("generate key: %w", err)
	}
	tmpl.SerialNumber = newSerial()
	tmpl.NotBefore = now.Add(-backdate)
	if tmpl.NotBefore.Before(ca.cert.NotBefore) {
		tmpl.NotBefore = ca.cert.NotBefore
	}
	tmpl.NotAfter = now.Add(leafValidity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, "", fmt.Errorf("sign certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, "", err
	}
	return pemBlock("CERTIFICATE", der), keyPEM, serialString(tmpl.SerialNumber), nil
}

// KeyPair builds the tls.Certificate a node presents: its leaf followed by
// the CA certificate, which PinnedClientTLS needs to find the pinned CA.
// It checks that the key matches the leaf and that the leaf was issued by
// the CA.
func KeyPair(certPEM, keyPEM, caPEM []byte) (tls.Certificate, error) {
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key pair: %w", err)
	}
	caCert, err := parseCertPEM(caPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key pair: CA: %w", err)
	}
	if err := kp.Leaf.CheckSignatureFrom(caCert); err != nil {
		return tls.Certificate{}, fmt.Errorf("key pair: the certificate was not issued by this CA: %w", err)
	}
	kp.Certificate = append(kp.Certificate[:1:1], caCert.Raw)
	return kp, nil
}

// checkName accepts what a node name may be: 1 to 64 of A-Z a-z 0-9 . _ -.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > 64 {
		return fmt.Errorf("%s %q is longer than 64 characters", what, s)
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("%s %q: invalid character %q (want letters, digits, '.', '_' or '-')", what, s, r)
		}
	}
	return nil
}

// isHostname reports whether s is a DNS name a certificate may carry:
// dot-separated labels of letters, digits, '-' and '_', none empty, none
// starting or ending with '-', at most 253 characters. A leading "*." is
// allowed.
func isHostname(s string) bool {
	s = strings.TrimPrefix(s, "*.")
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return false
			}
		}
	}
	return true
}
