package ports

import (
	"net"
	"strconv"
	"testing"
)

func TestLoopbackDistinctAndBelowEphemeral(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for range 5 {
		for _, p := range Loopback(t, 4) {
			if p < lowest || p >= low {
				t.Fatalf("port %d outside [%d, %d)", p, lowest, low)
			}
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}

func TestLoopbackSkipsTakenPorts(t *testing.T) {
	p := Loopback(t, 1)[0]
	// Occupy the next few ports the counter will hand out.
	var held []net.Listener
	for i := 1; i <= 3; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+i)))
		if err == nil { // otherwise something else holds it: taken all the same
			held = append(held, l)
		}
	}
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	if got := Loopback(t, 1)[0]; got <= p+3 && got > p {
		t.Fatalf("got port %d, which is held", got)
	}
}
