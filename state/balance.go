package state

import (
	"fmt"
	"strconv"
	"strings"
)

// Balance algorithms, named as in HAProxy's `balance` keyword.
const (
	BalanceRoundRobin = "roundrobin"
	BalanceStaticRR   = "static-rr"
	BalanceLeastConn  = "leastconn"
	BalanceFirst      = "first"
	BalanceSource     = "source"
	BalanceURI        = "uri"
	BalanceURLParam   = "url_param"
	BalanceHdr        = "hdr"
	BalanceRandom     = "random"
)

// Balance is a parsed `balance` value: the algorithm and its argument.
type Balance struct {
	Algorithm string
	// Param is the parameter name of url_param(NAME) or the header name of
	// hdr(NAME).
	Param string
	// Draws is N in random(N): the number of random draws, of which the
	// least loaded server wins ("power of N choices"). 1 for plain random.
	Draws int
}

// NeedsHTTP reports whether the algorithm reads HTTP request fields.
func (b Balance) NeedsHTTP() bool {
	return b.Algorithm == BalanceURI || b.Algorithm == BalanceURLParam || b.Algorithm == BalanceHdr
}

// Hashed reports whether the algorithm maps a key to a server by hashing,
// the ones that hash_type applies to.
func (b Balance) Hashed() bool {
	return b.Algorithm == BalanceSource || b.NeedsHTTP()
}

// ParseBalance parses "roundrobin", "url_param(id)", "hdr(Host)",
// "random(2)" and the other algorithm names.
func ParseBalance(s string) (Balance, error) {
	name, arg, hasArg := strings.Cut(s, "(")
	if hasArg {
		if !strings.HasSuffix(arg, ")") {
			return Balance{}, fmt.Errorf("unterminated argument in %q", s)
		}
		arg = strings.TrimSpace(strings.TrimSuffix(arg, ")"))
	}
	switch name {
	case BalanceRoundRobin, BalanceStaticRR, BalanceLeastConn, BalanceFirst, BalanceSource, BalanceURI:
		if hasArg {
			return Balance{}, fmt.Errorf("%s takes no argument", name)
		}
		return Balance{Algorithm: name}, nil
	case BalanceURLParam, BalanceHdr:
		if arg == "" || strings.ContainsAny(arg, " \t:()") {
			return Balance{}, fmt.Errorf("%s needs a name, as in %s(NAME)", name, name)
		}
		return Balance{Algorithm: name, Param: arg}, nil
	case BalanceRandom:
		draws := 2 // HAProxy's default for `random`
		if hasArg {
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > 100 {
				return Balance{}, fmt.Errorf("random(N) needs N between 1 and 100, got %q", arg)
			}
			draws = n
		}
		return Balance{Algorithm: name, Draws: draws}, nil
	}
	return Balance{}, fmt.Errorf("unknown algorithm %q (want roundrobin, static-rr, leastconn, first, source, uri, url_param(NAME), hdr(NAME), random or random(N))", s)
}
