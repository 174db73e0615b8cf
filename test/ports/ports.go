// Package ports hands tests loopback ports that nothing else will take
// between the moment they are picked and the moment the code under test
// binds them.
//
// Asking the kernel for port 0 and closing the listener is not enough: the
// port goes back into the ephemeral range, where the next outgoing
// connection or the next bind to port 0 can take it before the test's own
// listener does (CI saw "address already in use" that way). The ports given
// here lie below the kernel's ephemeral range, so only an explicit bind can
// take them, and each is handed out once per test binary.
package ports

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// lowest is the first port ever handed out; below it live well-known
// services a developer machine may run.
const lowest = 20000

// next counts the ports handed out by this test binary. It starts at an
// offset taken from the process id, so that test binaries running side by
// side (go test -p 2) mostly try different ports; a port another one holds
// is skipped all the same (free).
var next atomic.Uint32

func init() { next.Store(uint32(os.Getpid()*97) % 4096) }

// Loopback returns n distinct ports free for both TCP and UDP on 127.0.0.1.
func Loopback(t testing.TB, n int) []int {
	t.Helper()
	high := ephemeralLow() - 1
	if high <= lowest+1000 {
		t.Fatalf("ports: the ephemeral range starts at %d, too low to leave room for test ports", high+1)
	}
	span := uint32(high - lowest + 1)
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("ports: no free port below %d after %d tries", high+1, tries)
		}
		p := lowest + int((next.Add(1)-1)%span)
		if free(p) {
			out = append(out, p)
		}
	}
	return out
}

// Addr returns one loopback address ("127.0.0.1:port") from Loopback.
func Addr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Loopback(t, 1)[0]))
}

// free reports whether port can be bound on 127.0.0.1 for TCP and UDP.
func free(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

// ephemeralLow reads the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768 // Linux's default
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}
