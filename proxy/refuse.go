package proxy

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// A planned hand-over moves a VIP without losing a connection: the old
// holder stops taking new connections for it while it finishes the ones
// it has, and only then lets the address go. A socket filter on each
// listener does the refusing: a dropped SYN (unlike a reset from a closed
// listener) is retransmitted by the client a second later, by when the new
// holder answers. Only SYNs are dropped: the ACK that completes a
// handshake begun before the filter (and the request that may ride with
// it) must reach the listener, or that connection would hang half-open,
// unseen by the engine, until the address moved and the new holder reset
// it. Connections already accepted keep no filter.

// netOff is the kernel's SKF_NET_OFF: classic BPF loads at netOff+k read
// the network header, whichever layer the socket's packet data starts at.
const netOff = 0xFFF00000 // uint32(-0x100000)

// The TCP header's flag bits.
const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// keepPacket is a socket filter's "accept the whole packet".
const keepPacket = 0xFFFFFFFF

// refuseFilter assembles a socket filter that drops every SYN (without
// ACK) whose destination is one of addrs (IPv4 or IPv6) and keeps the
// rest. A TCP socket's filter sees the packet from the TCP header on.
func refuseFilter(addrs []netip.Addr) ([]bpf.RawInstruction, error) {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a.Is4():
			v4 = append(v4, a)
		case a.Is6():
			v6 = append(v6, a)
		default:
			return nil, fmt.Errorf("refuse: invalid address %v", a)
		}
	}
	// v4 block: load the destination, one compare-and-drop per address.
	block4 := []bpf.Instruction{bpf.LoadAbsolute{Off: netOff + 16, Size: 4}}
	for _, a := range v4 {
		b := a.As4()
		block4 = append(block4,
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: be32(b[:]), SkipFalse: 1},
			bpf.RetConstant{Val: 0})
	}
	block4 = append(block4, bpf.RetConstant{Val: keepPacket})

	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 13, Size: 1}, // TCP flags
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tcpSYN | tcpACK},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: tcpSYN, SkipTrue: 1},
		bpf.RetConstant{Val: keepPacket},
		bpf.LoadAbsolute{Off: netOff, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4}, // IP version
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipTrue: 1},
		bpf.Jump{Skip: uint32(len(block4))},
	}
	prog = append(prog, block4...)
	// v6 block: four 32-bit compares per address, the first mismatch
	// skipping to the next address.
	prog = append(prog,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1},
		bpf.RetConstant{Val: keepPacket})
	for _, a := range v6 {
		b := a.As16()
		for w := range 4 {
			prog = append(prog,
				bpf.LoadAbsolute{Off: netOff + 24 + uint32(4*w), Size: 4},
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: be32(b[4*w:]), SkipFalse: uint8(7 - 2*w)})
		}
		prog = append(prog, bpf.RetConstant{Val: 0})
	}
	prog = append(prog, bpf.RetConstant{Val: keepPacket})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("refuse: assemble filter: %w", err)
	}
	return raw, nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// setRefuse attaches the filter for addrs to the listener's socket, or
// detaches any filter when addrs is empty.
func (l *listener) setRefuse(addrs []netip.Addr) error {
	rc, err := l.ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("listener %s: %w", l.addr, err)
	}
	var raw []bpf.RawInstruction
	if len(addrs) > 0 {
		if raw, err = refuseFilter(addrs); err != nil {
			return err
		}
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if len(raw) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if serr == unix.ENOENT { // no filter attached
				serr = nil
			}
			return
		}
		filter := make([]unix.SockFilter, len(raw))
		for i, r := range raw {
			filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("listener %s: set refuse filter: %w", l.addr, err)
	}
	return nil
}

// Refuse makes every listener drop new connections addressed to addrs
// (silently, so clients retransmit their SYN), until Refuse is called
// again; an empty addrs takes every listener back to normal. Listeners
// bound later inherit the setting. Connections already accepted are not
// affected. The cluster calls it before it moves a VIP away in a planned
// hand-over.
func (e *Engine) Refuse(addrs []netip.Addr) error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.refused = slices.Clone(addrs)
	var first error
	for _, l := range e.listeners {
		if err := l.setRefuse(e.refused); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Idle reports whether no client connection is open and no accepted
// connection waits in a listener's accept queue (the kernel completed its
// handshake, the engine has not taken it yet). A planned hand-over waits
// for it after Refuse.
func (e *Engine) Idle() bool {
	e.connMu.Lock()
	open := len(e.conns)
	e.connMu.Unlock()
	if open > 0 {
		return false
	}
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	for _, l := range e.listeners {
		if l.backlog() > 0 {
			return false
		}
	}
	return true
}

// backlog is the length of the listener's accept queue (0 if unknown).
func (l *listener) backlog() int {
	rc, err := l.ln.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	rc.Control(func(fd uintptr) {
		// On a listening socket tcpi_unacked is the accept queue length.
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int(info.Unacked)
		}
	})
	return n
}
