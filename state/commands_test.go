package state

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// everyCommand holds one filled-in body of every known command type.
func everyCommand() []Command {
	w := 7
	return []Command{
		&ApplyConfig{YAML: docV1, Origin: "alice", Time: t0, IfVersion: 3, Import: true},
		&RollbackConfig{To: 2, Origin: "lb1", Time: t0, IfVersion: 4},
		&SetServerAdmin{Backend: "app", Server: "app1", Admin: AdminDrain},
		&SetServerWeight{Backend: "app", Server: "app1", Weight: &w},
		&HealthView{Node: "lb1", Seq: 9, Full: true, Servers: map[string]bool{"app/app1": true, "app/app2": false}},
		&SetVerdicts{Verdicts: map[string]bool{"app/app1": false}, Term: 3, LiveVoters: []string{"lb1", "lb2"}, Policy: PolicyAll},
		&NodeUpsert{Name: "lb1", ID: "id-1", RaftAddr: "10.0.0.1:7380", APIAddr: "10.0.0.1:7443", GossipAddr: "10.0.0.1:7946", Role: RoleWitness, Version: "1.2.3"},
		&NodeRemove{Name: "lb3"},
		&RevokeCert{Serial: "0a:1b", Node: "lb3"},
		&Noop{Note: "hello"},
	}
}

func TestEncodeDecodeEveryCommand(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, c := range everyCommand() {
		data, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(%T): %v", c, err)
		}
		if CommandType(data[0]) != c.Type() || data[1] != '{' {
			t.Errorf("%T encodes as % x...", c, data[:2])
		}
		typ, body, err := DecodeCommand(data)
		if err != nil {
			t.Fatalf("DecodeCommand(%v): %v", c.Type(), err)
		}
		if typ != c.Type() || reflect.TypeOf(body) != reflect.TypeOf(c) {
			t.Fatalf("round trip of %v: got %v %T", c.Type(), typ, body)
		}
		// Times decode into another *time.Location; compare what is on the
		// wire, then the fields DeepEqual can see through.
		again, _ := Encode(body)
		if string(again) != string(data) {
			t.Errorf("round trip of %v:\n got %s\nwant %s", c.Type(), again, data)
		}
		if ac, ok := body.(*ApplyConfig); ok && !ac.Time.Equal(t0) {
			t.Errorf("time %v, want %v", ac.Time, t0)
		}
		seen[typ] = true
	}
	// everyCommand must cover every known type.
	for i := range 256 {
		if ct := CommandType(i); ct.Known() && !seen[ct] {
			t.Errorf("everyCommand lacks %v", ct)
		}
	}
}

// TestDispatchTableMatchesTypes checks that every type the decoder knows
// has a handler, and no handler exists for a type it does not know.
func TestDispatchTableMatchesTypes(t *testing.T) {
	hs := handlers()
	for i := range 256 {
		ct := CommandType(i)
		if ct.Known() != (hs[ct] != nil) {
			t.Errorf("%v: known %v, handler %v", ct, ct.Known(), hs[ct] != nil)
		}
		if ct.Known() && strings.HasPrefix(ct.String(), "CommandType(") {
			t.Errorf("type 0x%02x has no name", i)
		}
	}
	if !TypeNoop.Ignorable() || TypeApplyConfig.Ignorable() {
		t.Error("IgnoreUnknown bit misread")
	}
}

func TestEncodeCommandChecksTheBody(t *testing.T) {
	if _, err := EncodeCommand(TypeApplyConfig, &NodeRemove{Name: "x"}); err == nil {
		t.Error("ApplyConfig with a NodeRemove body encoded")
	}
	if _, err := EncodeCommand(TypeNodeRemove, map[string]string{"name": "x"}); err == nil {
		t.Error("NodeRemove with a map body encoded")
	}
	if _, err := EncodeCommand(TypeNodeRemove, NodeRemove{Name: "x"}); err != nil {
		t.Errorf("value body refused: %v", err)
	}
	// An unknown type takes any body: newer code and tests build them.
	data, err := EncodeCommand(0x7e, map[string]int{"a": 1})
	if err != nil || string(data[1:]) != `{"a":1}` {
		t.Errorf("unknown type: %q %v", data, err)
	}
	if _, err := EncodeCommand(0x7e, func() {}); err == nil {
		t.Error("unencodable body encoded")
	}
}

func TestDecodeCommandRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		unknown bool
	}{
		{"empty", nil, false},
		{"unknown", []byte{0x7e, '{', '}'}, true},
		{"unknown flagged", []byte{0xfe, '{', '}'}, true},
		{"bad json", append([]byte{byte(TypeNodeRemove)}, "{"...), false},
		{"wrong shape", append([]byte{byte(TypeNodeRemove)}, `{"name": 5}`...), false},
		{"trailing data", append([]byte{byte(TypeNodeRemove)}, `{} {}`...), false},
		{"no body", []byte{byte(TypeNodeRemove)}, false},
	} {
		_, body, err := DecodeCommand(tc.data)
		if err == nil || body != nil {
			t.Errorf("%s: got %v, %v", tc.name, body, err)
			continue
		}
		if errors.Is(err, ErrUnknownCommand) != tc.unknown {
			t.Errorf("%s: %v, unknown = %v", tc.name, err, tc.unknown)
		}
	}
}

// FuzzDecodeCommand: decoding never panics, and what decodes encodes back
// to an entry that decodes to the same command.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range everyCommand() {
		data, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0xfe})
	f.Add([]byte{byte(TypeHealthView), 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, body, err := DecodeCommand(data)
		if err != nil {
			return
		}
		again, err := Encode(body)
		if err != nil {
			t.Fatalf("decoded %v does not encode: %v", typ, err)
		}
		typ2, body2, err := DecodeCommand(again)
		if err != nil || typ2 != typ {
			t.Fatalf("re-decode of %v: %v %v", typ, typ2, err)
		}
		if third, _ := Encode(body2); string(third) != string(again) {
			t.Fatalf("re-encode of %v: %s vs %s", typ, again, third)
		}
	})
}

// FuzzApply: Apply on any bytes panics exactly when the entry is a
// well-formed unknown type without the ignore bit, and otherwise returns a
// Result.
func FuzzApply(f *testing.F) {
	for _, c := range everyCommand() {
		data, _ := Encode(c)
		f.Add(data)
	}
	f.Add([]byte{0x7e, '{', '}'})
	f.Add([]byte{0xfe, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStore()
		h := &harness{t: t, s: s}
		h.ok(&NodeUpsert{Name: "lb1", ID: "1", RaftAddr: "10.0.0.1:7380", Role: RoleVoter})
		h.ok(&ApplyConfig{YAML: docV1, Time: t0})
		wantPanic := len(data) > 0 && !CommandType(data[0]).Known() && !CommandType(data[0]).Ignorable()
		defer func() {
			if r := recover(); (r != nil) != wantPanic {
				t.Fatalf("Apply(% x): panic %v, want panic %v", data, r, wantPanic)
			}
		}()
		if _, isResult := s.Apply(99, data).(Result); !isResult {
			t.Fatal("Apply returned no Result")
		}
	})
}

// t0 is a proposer's clock, in a zone other than UTC on purpose.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 8, time.FixedZone("CET", 3600))
