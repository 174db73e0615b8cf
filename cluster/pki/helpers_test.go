package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain fails the run if a goroutine of this package outlives the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(2 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

func leakedGoroutines(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "fulcrum/cluster/pki.") && !strings.Contains(g, "pki.TestMain") && !strings.Contains(g, "pki.leakedGoroutines") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTestCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, time.Now())
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

// creds is an issued certificate in every form a test needs.
type creds struct {
	certPEM, keyPEM []byte
	serial          string
	kp              tls.Certificate // leaf + CA, as KeyPair builds it
}

func issueNode(t *testing.T, ca *CA, name string) creds {
	t.Helper()
	c, k, s, err := ca.IssueNode(name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Now())
	if err != nil {
		t.Fatalf("IssueNode(%q): %v", name, err)
	}
	return toCreds(t, ca, c, k, s)
}

func issueClient(t *testing.T, ca *CA, name string) creds {
	t.Helper()
	c, k, s, err := ca.IssueClient(name, time.Now())
	if err != nil {
		t.Fatalf("IssueClient(%q): %v", name, err)
	}
	return toCreds(t, ca, c, k, s)
}

func toCreds(t *testing.T, ca *CA, certPEM, keyPEM []byte, serial string) creds {
	t.Helper()
	kp, err := KeyPair(certPEM, keyPEM, ca.CertPEM())
	if err != nil {
		t.Fatalf("KeyPair: %v", err)
	}
	return creds{certPEM: certPEM, keyPEM: keyPEM, serial: serial, kp: kp}
}

func (c creds) leaf(t *testing.T) *x509.Certificate {
	t.Helper()
	cert, err := parseCertPEM(c.certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// result is what each end of one handshake saw.
type result struct {
	srvErr, cliErr error
	srv, cli       tls.ConnectionState
}

// ok reports whether both ends completed the handshake and exchanged a byte.
func (r result) ok() bool { return r.srvErr == nil && r.cliErr == nil }

// handshake runs one real TLS handshake over 127.0.0.1 and then has the
// server send a byte that the client reads: in TLS 1.3 the client finishes
// its handshake before the server has judged the client's certificate, so
// a refusal of the client shows up at that read.
func handshake(t *testing.T, srvCfg, cliCfg *tls.Config) result {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var (
		res result
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			res.srvErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, srvCfg)
		if err := tc.Handshake(); err != nil {
			res.srvErr = err
			return
		}
		res.srv = tc.ConnectionState()
		if _, err := tc.Write([]byte{1}); err != nil {
			res.srvErr = err
		}
	}()
	func() {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			res.cliErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, cliCfg)
		if err := tc.Handshake(); err != nil {
			res.cliErr = err
			return
		}
		res.cli = tc.ConnectionState()
		if _, err := tc.Read(make([]byte, 1)); err != nil {
			res.cliErr = err
		}
	}()
	wg.Wait()
	return res
}

// wantRefused fails unless the handshake failed and the error of the end
// that refused (srv or cli) mentions want.
func wantRefused(t *testing.T, r result, refuser, want string) {
	t.Helper()
	if r.ok() {
		t.Fatalf("handshake succeeded, want it refused by the %s (%q)", refuser, want)
	}
	err := r.srvErr
	if refuser == "client" {
		err = r.cliErr
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s error = %v, want it to mention %q (server: %v, client: %v)", refuser, err, want, r.srvErr, r.cliErr)
	}
}

func wantOK(t *testing.T, r result) {
	t.Helper()
	if !r.ok() {
		t.Fatalf("handshake refused: server: %v; client: %v", r.srvErr, r.cliErr)
	}
}

// denyList is a RevokedFunc backed by a set, safe for concurrent use.
type denyList struct {
	mu sync.Mutex
	m  map[string]bool
}

func (d *denyList) revoke(serial string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]bool{}
	}
	d.m[serial] = true
}

func (d *denyList) revoked(serial string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[serial]
}
