package health

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/fulcrum-lb/fulcrum/state"
)

// Key identifies a server's health state across config reloads: a server
// keeps its state (UP or DOWN, counters, last result) when its Key is
// unchanged. Keying by address alone would carry a verdict over to a
// check that now means something else (caddy#7870); keying by the whole
// config would reset every server on any edit (haproxy#918).
type Key struct {
	Backend string `json:"backend"`
	Server  string `json:"server"`
	Address string `json:"address"`
	// Check is a digest of what the checks probe and what passing means:
	// whether the server is checked, the type, port, request and
	// expectations of the check, and the agent port. Timing (intervals,
	// timeout), rise and fall, passive observation, weight and slowstart
	// are left out: they are tuned in place without losing the state.
	Check string `json:"check"`
}

// probe is the part of a check that Key.Check digests; the fields that do
// not apply to the check's type stay zero.
type probe struct {
	Checked   bool              `json:"checked"`
	AgentPort int               `json:"agent_port"`
	Type      state.CheckType   `json:"type"`
	Port      int               `json:"port"`
	Path      string            `json:"path"`
	Method    string            `json:"method"`
	Host      string            `json:"host"`
	Headers   map[string]string `json:"headers"`
	HTTPS     bool              `json:"https"`
	Verify    bool              `json:"verify"`
	SNI       string            `json:"sni"`
	Status    string            `json:"status"`
	Body      string            `json:"body"`
	Regex     bool              `json:"regex"`
	Send      []string          `json:"send"`
	Expect    []string          `json:"expect"`
}

// KeyOf returns the Key of server s of backend b (from a defaulted config).
func KeyOf(b *state.Backend, s *state.Server) Key {
	hc, checked := state.ServerCheck(b, s)
	p := probe{Checked: checked, AgentPort: s.AgentPort}
	if checked {
		p.Type, p.Port = hc.Type, hc.Port
		switch hc.Type {
		case state.CheckTCP:
			p.Send, p.Expect = hc.TCPSend, hc.TCPExpect
		case state.CheckTLS:
			p.Verify, p.SNI = hc.VerifiesTLS(), hc.TLSServerName
		case state.CheckHTTP:
			p.Path, p.Method, p.Host, p.Headers = hc.Path, hc.Method, hc.Host, hc.Headers
			p.HTTPS, p.Status, p.Body, p.Regex = hc.IsHTTPS(), hc.ExpectStatus.String(), hc.ExpectBody, hc.BodyIsRegex()
			if p.HTTPS {
				p.Verify, p.SNI = hc.VerifiesTLS(), hc.TLSServerName
			}
		}
	}
	// Marshalling a struct of plain fields and a string map cannot fail,
	// and sorts the map's keys.
	data, _ := json.Marshal(p)
	sum := sha256.Sum256(data)
	return Key{Backend: b.Name, Server: s.Name, Address: s.Address, Check: hex.EncodeToString(sum[:12])}
}
