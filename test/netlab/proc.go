package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a background process inside a lab namespace, started by
// Lab.Start. Its stdout and stderr are captured together.
type Proc struct {
	host *Host
	argv []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // valid once done is closed
}

// Start runs argv in the background inside h's namespace (`ip netns exec`,
// which execs argv in place: Pid is argv's own PID), with env added to this
// process's environment. It calls t.Fatal if the process cannot start. The
// process is ended at cleanup (SIGTERM, then SIGKILL); if the test failed,
// its output is logged then.
func (l *Lab) Start(h *Host, env []string, argv ...string) *Proc {
	l.t.Helper()
	if len(argv) == 0 {
		l.t.Fatal("netlab: Start without a command")
	}
	p := &Proc{
		host: h,
		argv: argv,
		cmd:  exec.Command("ip", append([]string{"netns", "exec", h.ns}, argv...)...),
		out:  &syncBuffer{},
		done: make(chan struct{}),
	}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.WaitDelay = 2 * time.Second // a grandchild keeping the pipe open must not block Wait
	// If the test binary dies without running its cleanups (a -timeout
	// panic), the kernel kills the process too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		l.t.Fatalf("netlab: Start %v in %s after the lab was closed", argv, h.ns)
	}
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("netlab: start %v in %s: %v", argv, h.ns, err)
	}
	l.procs = append(l.procs, p)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// Pid is the process's PID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Host is the host the process runs in.
func (p *Proc) Host() *Host { return p.host }

// Done is closed when the process has exited and its output is complete.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0), or ctx's error if ctx ends first.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("netlab: waiting for %v in %s: %w", p.argv, p.host.ns, ctx.Err())
	}
}

// WaitTimeout is Wait with a timeout.
func (p *Proc) WaitTimeout(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return p.Wait(ctx)
}

func (p *Proc) exitErr() error {
	if !p.Exited() {
		return errors.New("still running")
	}
	return p.err
}

// Signal sends sig to the process; it is a no-op once it has exited.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return nil
	}
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// Kill sends SIGKILL (see Signal).
func (p *Proc) Kill() error { return p.Signal(syscall.SIGKILL) }

// Output returns what the process has written to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

func (p *Proc) String() string {
	return p.host.ns + ": " + strings.Join(p.argv, " ")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
