package proxy

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// An idle keep-alive connection served by a goroutine keeps that
// goroutine's stack, grown by the requests it served (4 KiB or more, the
// largest cost of an idle connection). A connection idle for parkAfter is
// therefore parked: its goroutine ends, and the parker, one goroutine
// waiting on an epoll set of its own beside the runtime's poller, starts a
// fresh goroutine when the connection becomes readable, or closes it when
// its keep-alive (or first-request) timeout passes. Busy connections never
// park: the hot path is unchanged.
//
// The same epoll set also watches each tunnelled socket for a hang-up
// (EPOLLRDHUP), which the runtime's poller does not report: see halfPipe.

// parkAfter is how long a connection waits for its next request in its own
// goroutine before it is parked.
const parkAfter = 100 * time.Millisecond

// parkSweep is how often the parker closes the parked connections whose
// timeout passed (so a parked connection's timeout is late by up to this).
const parkSweep = 250 * time.Millisecond

// The parker's epoll set is itself waited on through the runtime's
// poller (an epoll fd is readable while it has events): a blocking
// epoll_wait would hold the only P of a GOMAXPROCS=1 process until sysmon
// took it back, stalling every connection for up to 10 ms.
type parker struct {
	ep     *os.File // the epoll set, non-blocking
	rc     syscall.RawConn
	events []unix.EpollEvent
	done   chan struct{}

	mu     sync.Mutex
	conns  map[uint64]*conn     // parked, by epoll token
	pipes  map[uint64]*halfPipe // tunnel directions watched for a hang-up (tcp.go)
	next   uint64
	closed bool
}

func newParker() (*parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("parker: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("parker: %w", err)
	}
	ep := os.NewFile(uintptr(epfd), "parker-epoll")
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("parker: %w", err)
	}
	p := &parker{ep: ep, rc: rc, events: make([]unix.EpollEvent, 128), done: make(chan struct{}),
		conns: map[uint64]*conn{}, pipes: map[uint64]*halfPipe{}}
	go p.run()
	return p, nil
}

func setToken(ev *unix.EpollEvent, tok uint64) {
	ev.Fd, ev.Pad = int32(uint32(tok)), int32(uint32(tok>>32))
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park hands cn, waiting in state waiting, to the parker until it is
// readable or until. It reports whether it did: then the caller's
// goroutine must end without touching cn again (the parker, or whoever
// closes cn, owns it). On false cn is as it was.
func (p *parker) park(cn *conn, waiting int32, until time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || cn.eng.stopping.Load() || !cn.state.CompareAndSwap(waiting, connParked) {
		return false
	}
	p.next++
	tok := p.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, tok)
	if err := p.ctl(cn.rc, unix.EPOLL_CTL_ADD, &ev); err != nil {
		// Only a closer that waits for p.mu can have taken it meanwhile.
		return !cn.state.CompareAndSwap(connParked, waiting)
	}
	cn.parkTok, cn.parkedUntil = tok, until
	p.conns[tok] = cn
	return true
}

// unpark takes cn out of the epoll set; the caller owns it (it moved its
// state away from connParked).
func (p *parker) unpark(cn *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remove(cn)
}

func (p *parker) remove(cn *conn) {
	if p.conns[cn.parkTok] != cn {
		return
	}
	delete(p.conns, cn.parkTok)
	p.ctl(cn.rc, unix.EPOLL_CTL_DEL, nil)
}

// watch adds h's source socket to the epoll set for one report of a
// hang-up (EPOLLRDHUP, or EPOLLHUP/EPOLLERR, which epoll always reports),
// passed on to h.hangup. On failure h is left unwatched.
func (p *parker) watch(h *halfPipe) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.next++
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setToken(&ev, p.next)
	if p.ctl(h.srcRC, unix.EPOLL_CTL_ADD, &ev) != nil {
		return
	}
	h.tok, h.watched = p.next, true
	p.pipes[h.tok] = h
}

// unwatch forgets h when its tunnel ends. Its socket leaves the epoll set
// when it is closed (a later report finds no tunnel: tokens are not
// reused), which saves a system call per direction.
func (p *parker) unwatch(h *halfPipe) {
	if !h.watched {
		return
	}
	p.mu.Lock()
	delete(p.pipes, h.tok)
	p.mu.Unlock()
}

// ctl adds the socket behind rc to the epoll set or deletes it.
func (p *parker) ctl(rc syscall.RawConn, op int, ev *unix.EpollEvent) error {
	var err error
	cerr := p.rc.Control(func(epfd uintptr) {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.EpollCtl(int(epfd), op, int(fd), ev)
		})
		if err == nil {
			err = cerr
		}
	})
	if err == nil {
		err = cerr
	}
	return err
}

func (p *parker) run() {
	defer close(p.done)
	n := 0
	collect := func(epfd uintptr) bool {
		var err error
		n, err = unix.EpollWait(int(epfd), p.events, 0)
		if err != nil {
			n = 0 // EINTR: wait and try again
		}
		return n > 0
	}
	for {
		p.ep.SetReadDeadline(time.Now().Add(parkSweep))
		err := p.rc.Read(collect)
		switch {
		case err == nil:
			for i := range n {
				p.wake(token(&p.events[i]))
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.sweep(time.Now())
		default:
			return // closed by stop
		}
	}
}

// wake starts a goroutine for the parked connection tok, now readable (or
// closed by its client: the goroutine finds out).
func (p *parker) wake(tok uint64) {
	p.mu.Lock()
	if h := p.pipes[tok]; h != nil {
		delete(p.pipes, tok)
		p.mu.Unlock()
		h.hangup()
		return
	}
	cn := p.conns[tok]
	if cn != nil {
		p.remove(cn)
	}
	p.mu.Unlock()
	if cn != nil && cn.state.CompareAndSwap(connParked, connActive) {
		cn.eng.run(task{cn: cn})
	}
}

// sweep closes the parked connections whose timeout passed.
func (p *parker) sweep(now time.Time) {
	var expired []*conn
	p.mu.Lock()
	for _, cn := range p.conns {
		if now.After(cn.parkedUntil) && cn.state.CompareAndSwap(connParked, connClosing) {
			expired = append(expired, cn)
		}
	}
	for _, cn := range expired {
		p.remove(cn)
	}
	p.mu.Unlock()
	for _, cn := range expired {
		cn.end()
	}
}

// stop ends the loop; the engine has closed every parked connection.
func (p *parker) stop() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ep.Close()
	<-p.done
}
