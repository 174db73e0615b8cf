package proxy

import (
	"bytes"
	"os"
	goruntime "runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkIdleConnMemory measures what an idle keep-alive client
// connection costs the engine, as compare.sh's idle-memory scenario does:
// idleConns connections each send one request, read the answer and stay
// open. The clients are raw sockets (no Go objects), so the figures are
// the engine's: goroutine stacks, live heap and RSS per connection, the
// RSS read before and after a forced GC. b.N is ignored: run it with
// -benchtime 1x.
func BenchmarkIdleConnMemory(b *testing.B) {
	n := 5000
	if s := os.Getenv("IDLE_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	backend := rawBackend(b)
	_, addr := startEngine(b, oneBackendConfig(backend))
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	req := []byte("GET /small HTTP/1.1\r\nHost: bench\r\n\r\n")
	buf := make([]byte, 4096)
	goruntime.GC()
	stacks0, live0 := memMetrics()
	rss0 := rssBytes(b)
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	for range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		fds = append(fds, fd)
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Write(fd, req); err != nil {
			b.Fatal(err)
		}
		got := 0
		for !bytes.HasSuffix(buf[:got], []byte("aaaa")) {
			m, err := unix.Read(fd, buf[got:])
			if err != nil || m == 0 {
				b.Fatalf("read: %d %v", m, err)
			}
			got += m
		}
	}
	rss1 := rssBytes(b)
	goruntime.GC()
	goruntime.GC()
	stacks1, live1 := memMetrics()
	rss2 := rssBytes(b)
	per := func(a, z uint64) float64 { return (float64(z) - float64(a)) / float64(n) }
	b.ReportMetric(per(rss0, rss1), "B-rss/conn")
	b.ReportMetric(per(rss0, rss2), "B-rss-after-gc/conn")
	b.ReportMetric(per(stacks0, stacks1), "B-stack/conn")
	b.ReportMetric(per(live0, live1), "B-live-heap/conn")
}

func memMetrics() (stacks, live uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/stacks:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func rssBytes(tb testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
