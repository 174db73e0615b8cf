package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// RevokedFunc reports whether the certificate with the given serial (as
// Serial spells it) is on the cluster's deny list. It is called at every
// handshake, from many goroutines; it must be fast and must not block.
// A nil RevokedFunc revokes nothing.
type RevokedFunc = func(serial string) bool

// ServerTLS returns the configuration of a port that only cluster
// certificates may reach (Raft, forwarded writes): TLS 1.3, a client
// certificate required and verified against ca, and a revoked client serial
// refused at every handshake, resumptions included.
func ServerTLS(ca *x509.CertPool, cert tls.Certificate, revoked RevokedFunc) *tls.Config {
	return serverTLS(ca, cert, revoked, tls.RequireAndVerifyClientCert)
}

// APIServerTLS is ServerTLS for the API port, where a joiner with no
// certificate yet must reach the join endpoint: a client certificate is
// optional, but one that is given is verified and checked against the deny
// list like ServerTLS does. Every handler other than join must call
// PeerIdentity and refuse a connection without one.
func APIServerTLS(ca *x509.CertPool, cert tls.Certificate, revoked RevokedFunc) *tls.Config {
	return serverTLS(ca, cert, revoked, tls.VerifyClientCertIfGiven)
}

func serverTLS(ca *x509.CertPool, cert tls.Certificate, revoked RevokedFunc, auth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		ClientCAs:    ca,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				if auth == tls.RequireAndVerifyClientCert {
					return errNoPeerCert // the library refuses first; belt and braces
				}
				return nil
			}
			return checkRevoked("client", cs.PeerCertificates[0], revoked)
		},
	}
}

// ClientTLS returns the configuration for dialing a cluster member: TLS 1.3,
// cert presented, the server verified against ca for server auth and its
// serial checked against the deny list. With serverName set the server's
// certificate must name it (a node name or an address in its SANs); with
// serverName empty any server certificate of the cluster CA is accepted,
// which suits a transport that knows only an address.
func ClientTLS(ca *x509.CertPool, cert tls.Certificate, serverName string, revoked RevokedFunc) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ServerName:   serverName,
	}
	if serverName != "" {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errNoPeerCert
			}
			return checkRevoked("server", cs.PeerCertificates[0], revoked)
		}
		return cfg
	}
	// No name to check: the library's verification, which always checks one,
	// is replaced by the same chain check without it.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errNoPeerCert
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         ca,
			Intermediates: intermediates(cs.PeerCertificates[1:]),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			CurrentTime:   time.Now(),
		}); err != nil {
			return fmt.Errorf("server certificate: %w", err)
		}
		return checkRevoked("server", leaf, revoked)
	}
	return cfg
}

// PinnedClientTLS returns the configuration a joiner uses for its first
// contact, before it has the CA certificate: the server is accepted iff the
// chain it sends holds a CA certificate whose SHA-256 fingerprint is
// fingerprint and its leaf verifies, for server auth, against that CA alone.
// No host name is checked: the pin is the server's identity. No client
// certificate is presented. An invalid fingerprint refuses every server.
func PinnedClientTLS(fingerprint string) *tls.Config {
	pin, pinErr := normalizeFingerprint(fingerprint)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pinned check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if pinErr != nil {
				return fmt.Errorf("pinned CA: %w", pinErr)
			}
			if len(cs.PeerCertificates) == 0 {
				return errNoPeerCert
			}
			leaf, rest := cs.PeerCertificates[0], cs.PeerCertificates[1:]
			i := slices.IndexFunc(rest, func(c *x509.Certificate) bool { return fingerprintOf(c) == pin })
			if i < 0 {
				return fmt.Errorf("the server's chain does not hold the pinned CA %s: not this cluster, or a man in the middle", pin)
			}
			roots := x509.NewCertPool()
			roots.AddCert(rest[i])
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots:       roots,
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				CurrentTime: time.Now(),
			}); err != nil {
				return fmt.Errorf("the server's certificate does not verify against the pinned CA %s: %w", pin, err)
			}
			return nil
		},
	}
}

// RequireRole returns a copy of cfg that also refuses a peer whose verified
// certificate is not of one of roles (RoleNode, RoleOperator): the Raft port
// takes nodes only, whatever the CA signed. Use it on configurations that
// verify the peer (ServerTLS, ClientTLS); on APIServerTLS it makes the client
// certificate mandatory again.
func RequireRole(cfg *tls.Config, roles ...string) *tls.Config {
	c := cfg.Clone()
	inner := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if inner != nil {
			if err := inner(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errNoPeerCert
		}
		if r := roleOf(cs.PeerCertificates[0]); !slices.Contains(roles, r) {
			return fmt.Errorf("peer %q has role %q, this port takes %v", cs.PeerCertificates[0].Subject.CommonName, r, roles)
		}
		return nil
	}
	return c
}

// Identity is a verified peer: its name (the CN), role (the OU) and serial.
type Identity struct {
	Name   string
	Role   string
	Serial string
}

// PeerIdentity returns the identity of the peer of a connection whose
// configuration verified the peer's chain (ServerTLS, APIServerTLS, ClientTLS
// with a server name), and false if no chain was verified. Handlers call it
// with the http.Request's TLS field.
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	leaf := cs.VerifiedChains[0][0]
	return Identity{Name: leaf.Subject.CommonName, Role: roleOf(leaf), Serial: Serial(leaf)}, true
}

func roleOf(c *x509.Certificate) string {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return ""
	}
	return c.Subject.OrganizationalUnit[0]
}

func checkRevoked(side string, leaf *x509.Certificate, revoked RevokedFunc) error {
	if revoked != nil && revoked(Serial(leaf)) {
		return fmt.Errorf("%s certificate %q (serial %s) has been revoked", side, leaf.Subject.CommonName, Serial(leaf))
	}
	return nil
}

func intermediates(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func fingerprintOf(c *x509.Certificate) string { return fingerprint(c.Raw) }

var errNoPeerCert = errors.New("the peer presented no certificate")
