package pki

import (
	"bytes"
	"crypto/tls"
	"testing"
)

func TestMutualTLSNodeAccepted(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	for _, name := range []string{"lb1", "127.0.0.1", ""} {
		t.Run("serverName="+name, func(t *testing.T) {
			r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), lb2.kp, name, nil))
			wantOK(t, r)
			if r.srv.Version != tls.VersionTLS13 {
				t.Errorf("version = %#x, want TLS 1.3", r.srv.Version)
			}
			id, ok := PeerIdentity(&r.srv)
			if want := (Identity{Name: "lb2", Role: RoleNode, Serial: lb2.serial}); !ok || id != want {
				t.Errorf("server sees PeerIdentity = %+v, %v; want %+v", id, ok, want)
			}
			if name != "" {
				id, ok := PeerIdentity(&r.cli)
				if want := (Identity{Name: "lb1", Role: RoleNode, Serial: lb1.serial}); !ok || id != want {
					t.Errorf("client sees PeerIdentity = %+v, %v; want %+v", id, ok, want)
				}
			}
		})
	}
}

func TestMutualTLSWrongServerName(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), lb2.kp, "lb3", nil))
	wantRefused(t, r, "client", "not lb3")
}

func TestMutualTLSOtherCARefused(t *testing.T) {
	ca, other := newTestCA(t, "prod"), newTestCA(t, "prod") // same name, different key
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	rogue := issueNode(t, other, "lb2")

	t.Run("client of another CA", func(t *testing.T) {
		r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), rogue.kp, "lb1", nil))
		wantRefused(t, r, "server", "unknown authority")
	})
	for _, name := range []string{"lb1", ""} {
		t.Run("server of another CA, serverName="+name, func(t *testing.T) {
			rogueSrv := issueNode(t, other, "lb1")
			r := handshake(t, ServerTLS(ca.Pool(), rogueSrv.kp, nil), ClientTLS(ca.Pool(), lb2.kp, name, nil))
			wantRefused(t, r, "client", "unknown authority")
		})
	}
	t.Run("api port, client of another CA", func(t *testing.T) {
		r := handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), rogue.kp, "lb1", nil))
		wantRefused(t, r, "server", "unknown authority")
	})
}

func TestMutualTLSNoClientCertRefused(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1 := issueNode(t, ca, "lb1")
	cli := ClientTLS(ca.Pool(), tls.Certificate{}, "lb1", nil)
	cli.Certificates = nil
	r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), cli)
	wantRefused(t, r, "server", "didn't provide a certificate")

	// The API port lets a joiner through, but with no identity.
	r = handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), cli)
	wantOK(t, r)
	if id, ok := PeerIdentity(&r.srv); ok {
		t.Errorf("PeerIdentity of a client without certificate = %+v, want none", id)
	}
	// ... unless the port requires a role.
	r = handshake(t, RequireRole(APIServerTLS(ca.Pool(), lb1.kp, nil), RoleNode), cli)
	wantRefused(t, r, "server", "no certificate")
}

func TestMutualTLSRevokedRefused(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	op := issueClient(t, ca, "alice")

	t.Run("server refuses a revoked client", func(t *testing.T) {
		var deny denyList
		srv := ServerTLS(ca.Pool(), lb1.kp, deny.revoked)
		wantOK(t, handshake(t, srv, ClientTLS(ca.Pool(), lb2.kp, "lb1", nil)))
		deny.revoke(lb2.serial)
		wantRefused(t, handshake(t, srv, ClientTLS(ca.Pool(), lb2.kp, "lb1", nil)), "server", "revoked")
		// Others are unaffected.
		wantOK(t, handshake(t, srv, ClientTLS(ca.Pool(), op.kp, "lb1", nil)))
	})
	t.Run("api port refuses a revoked client", func(t *testing.T) {
		var deny denyList
		deny.revoke(op.serial)
		r := handshake(t, APIServerTLS(ca.Pool(), lb1.kp, deny.revoked), ClientTLS(ca.Pool(), op.kp, "lb1", nil))
		wantRefused(t, r, "server", "revoked")
	})
	for _, name := range []string{"lb1", ""} {
		t.Run("client refuses a revoked server, serverName="+name, func(t *testing.T) {
			var deny denyList
			deny.revoke(lb1.serial)
			r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), lb2.kp, name, deny.revoked))
			wantRefused(t, r, "client", "revoked")
		})
	}
}

// TestRevokedRefusedOnResumption proves that the deny list is consulted on a
// resumed session too, not only on a full handshake.
func TestRevokedRefusedOnResumption(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")

	t.Run("server side", func(t *testing.T) {
		var deny denyList
		srv := ServerTLS(ca.Pool(), lb1.kp, deny.revoked)
		cli := ClientTLS(ca.Pool(), lb2.kp, "lb1", nil)
		cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		wantOK(t, handshake(t, srv, cli))
		r := handshake(t, srv, cli)
		wantOK(t, r)
		if !r.srv.DidResume {
			t.Fatal("the second handshake did not resume; the test proves nothing")
		}
		deny.revoke(lb2.serial)
		wantRefused(t, handshake(t, srv, cli), "server", "revoked")
	})
	t.Run("client side", func(t *testing.T) {
		var deny denyList
		srv := ServerTLS(ca.Pool(), lb1.kp, nil)
		cli := ClientTLS(ca.Pool(), lb2.kp, "lb1", deny.revoked)
		cli.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		wantOK(t, handshake(t, srv, cli))
		r := handshake(t, srv, cli)
		wantOK(t, r)
		if !r.cli.DidResume {
			t.Fatal("the second handshake did not resume; the test proves nothing")
		}
		deny.revoke(lb1.serial)
		wantRefused(t, handshake(t, srv, cli), "client", "revoked")
	})
}

func TestMinimumTLS13(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	cli := ClientTLS(ca.Pool(), lb2.kp, "lb1", nil)
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	wantRefused(t, handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), cli), "server", "unsupported versions")
}

func TestOperatorCertClientAuthOnly(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1, lb2 := issueNode(t, ca, "lb1"), issueNode(t, ca, "lb2")
	op := issueClient(t, ca, "alice")

	// As a client of the API: accepted, known as an operator.
	r := handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), ClientTLS(ca.Pool(), op.kp, "lb1", nil))
	wantOK(t, r)
	if id, ok := PeerIdentity(&r.srv); !ok || id.Role != RoleOperator || id.Name != "alice" {
		t.Errorf("PeerIdentity = %+v, %v; want alice, operator", id, ok)
	}
	// Not on a nodes-only port.
	raft := RequireRole(ServerTLS(ca.Pool(), lb1.kp, nil), RoleNode)
	wantRefused(t, handshake(t, raft, ClientTLS(ca.Pool(), op.kp, "lb1", nil)), "server", `role "operator"`)
	wantOK(t, handshake(t, raft, ClientTLS(ca.Pool(), lb2.kp, "lb1", nil)))

	// Never as a server certificate, whatever the client checks.
	r = handshake(t, ServerTLS(ca.Pool(), op.kp, nil), ClientTLS(ca.Pool(), lb2.kp, "", nil))
	wantRefused(t, r, "client", "incompatible key usage")
	r = handshake(t, ServerTLS(ca.Pool(), op.kp, nil), ClientTLS(ca.Pool(), lb2.kp, "alice", nil))
	wantRefused(t, r, "client", "failed to verify certificate") // no SAN, and no server auth either
	r = handshake(t, ServerTLS(ca.Pool(), op.kp, nil), PinnedClientTLS(ca.Fingerprint()))
	wantRefused(t, r, "client", "incompatible key usage")
}

func TestPinnedClientTLS(t *testing.T) {
	ca, other := newTestCA(t, "prod"), newTestCA(t, "prod")
	lb1 := issueNode(t, ca, "lb1")
	pin := ca.Fingerprint()

	t.Run("right CA accepted", func(t *testing.T) {
		r := handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), PinnedClientTLS(pin))
		wantOK(t, r)
		if len(r.cli.PeerCertificates) != 2 || Serial(r.cli.PeerCertificates[0]) != lb1.serial {
			t.Errorf("client saw %d certificates", len(r.cli.PeerCertificates))
		}
	})
	t.Run("pin in upper case accepted", func(t *testing.T) {
		wantOK(t, handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), PinnedClientTLS(string(bytes.ToUpper([]byte(pin))))))
	})
	t.Run("another CA's server refused", func(t *testing.T) {
		rogue := issueNode(t, other, "lb1")
		r := handshake(t, APIServerTLS(other.Pool(), rogue.kp, nil), PinnedClientTLS(pin))
		wantRefused(t, r, "client", "does not hold the pinned CA")
	})
	t.Run("impostor replaying the real CA certificate refused", func(t *testing.T) {
		rogue := issueNode(t, other, "lb1")
		kp := rogue.kp
		kp.Certificate = [][]byte{kp.Certificate[0], ca.Certificate().Raw}
		r := handshake(t, APIServerTLS(other.Pool(), kp, nil), PinnedClientTLS(pin))
		wantRefused(t, r, "client", "does not verify against the pinned CA")
	})
	t.Run("server without its CA in the chain refused", func(t *testing.T) {
		kp, err := tls.X509KeyPair(lb1.certPEM, lb1.keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		r := handshake(t, APIServerTLS(ca.Pool(), kp, nil), PinnedClientTLS(pin))
		wantRefused(t, r, "client", "does not hold the pinned CA")
	})
	t.Run("invalid pin refuses everything", func(t *testing.T) {
		r := handshake(t, APIServerTLS(ca.Pool(), lb1.kp, nil), PinnedClientTLS(pin[:10]))
		wantRefused(t, r, "client", "pinned CA")
	})
	t.Run("nodes-only port refuses the joiner", func(t *testing.T) {
		r := handshake(t, ServerTLS(ca.Pool(), lb1.kp, nil), PinnedClientTLS(pin))
		wantRefused(t, r, "server", "didn't provide a certificate")
	})
}

// TestJoinOverTLS runs the join exchange of the package comment: pinned
// first contact, a nonce from the TLS exporter on both ends, and a proof
// that is good on its own connection only.
func TestJoinOverTLS(t *testing.T) {
	ca := newTestCA(t, "prod")
	lb1 := issueNode(t, ca, "lb1")
	secret := NewSecret()
	tok, err := ParseToken(NewToken(secret, ca.Fingerprint()))
	if err != nil {
		t.Fatal(err)
	}
	srv := APIServerTLS(ca.Pool(), lb1.kp, nil)

	first := handshake(t, srv, PinnedClientTLS(tok.CAFingerprint))
	wantOK(t, first)
	cliNonce, err := ExportJoinNonce(&first.cli)
	if err != nil {
		t.Fatal(err)
	}
	srvNonce, err := ExportJoinNonce(&first.srv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cliNonce, srvNonce) || len(cliNonce) != NonceSize {
		t.Fatalf("nonces differ: client %x, server %x", cliNonce, srvNonce)
	}
	proof := JoinProof(tok.Secret, "lb2", cliNonce)
	if !VerifyJoinProof(secret, "lb2", srvNonce, proof) {
		t.Fatal("the server refused a good proof")
	}

	second := handshake(t, srv, PinnedClientTLS(tok.CAFingerprint))
	wantOK(t, second)
	n2, err := ExportJoinNonce(&second.srv)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(n2, srvNonce) {
		t.Fatal("two connections exported the same nonce")
	}
	if VerifyJoinProof(secret, "lb2", n2, proof) {
		t.Fatal("a proof from one connection was accepted on another")
	}

	// The CA certificate the server hands over is checked against the pin.
	if _, err := ParseCAPEM(ca.CertPEM(), tok.CAFingerprint); err != nil {
		t.Fatalf("ParseCAPEM(right CA): %v", err)
	}
	other := newTestCA(t, "prod")
	if _, err := ParseCAPEM(other.CertPEM(), tok.CAFingerprint); err == nil {
		t.Fatal("ParseCAPEM accepted another CA")
	}
	if _, err := ParseCAPEM([]byte("garbage"), tok.CAFingerprint); err == nil {
		t.Fatal("ParseCAPEM accepted garbage")
	}
	if _, err := ExportJoinNonce(&tls.ConnectionState{}); err == nil {
		t.Fatal("ExportJoinNonce accepted an incomplete handshake")
	}
}
