package netlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// markerDir holds one file per live lab, naming the process that owns it
// (PID and start time). A lab whose owner died without running its
// cleanups (a `go test -timeout` panic, SIGKILL) is removed by the next New
// on the machine.
const markerDir = "/run/netlab"

// procStart returns the start time of pid (field 22 of /proc/PID/stat),
// which tells a live owner from a reused PID.
func procStart(pid string) (string, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may contain spaces
	if i < 0 {
		return "", errors.New("bad stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", errors.New("bad stat")
	}
	return f[19], nil // field 22 overall; f[0] is field 3
}

func writeMarker(name string) error {
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return err
	}
	self := fmt.Sprint(os.Getpid())
	start, err := procStart(self)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(markerDir, name), []byte(self+" "+start+"\n"), 0o644)
}

func removeMarker(name string) { os.Remove(filepath.Join(markerDir, name)) }

// sweepStale removes labs whose owning process is gone: every process in
// their namespaces, then the namespaces, then the marker. Only namespaces
// named after a marker are touched.
func sweepStale() error {
	ents, err := os.ReadDir(markerDir)
	if err != nil {
		return nil // no labs yet
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !prefixRE.MatchString(name) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(markerDir, name))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 2 {
			if start, err := procStart(f[0]); err == nil && start == f[1] {
				continue // owner alive
			}
		}
		nss, _ := filepath.Glob(filepath.Join(netnsDir, name+"-*"))
		for i := range nss {
			nss[i] = filepath.Base(nss[i])
		}
		if err := killIn(nss, 500*time.Millisecond, 5*time.Second); err != nil {
			errs = append(errs, err)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok := true
		for _, ns := range nss {
			if err := ipCmd(ctx, nil, "netns", "del", ns); err != nil {
				errs = append(errs, err)
				ok = false
			}
		}
		cancel()
		if ok {
			removeMarker(name)
		}
	}
	return errors.Join(errs...)
}
