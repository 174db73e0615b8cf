package boxes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The boxes boot from one Debian root file system, built once with
// debootstrap and kept in a cache directory outside the repository. Each
// box mounts it read-only as the lower layer of its own overlay.

// debootstrapArgs is how the cached tree is made; the marker file holds
// this line, so a change here rebuilds the cache.
var debootstrapArgs = []string{
	"--variant=minbase",
	"--include=systemd,systemd-sysv,dbus,iproute2,adduser",
	"bookworm",
}

// markerName is written last into a complete tree.
const markerName = ".fulcrum-e2e-complete"

// cacheDir is FULCRUM_E2E_CACHE, or /var/cache/fulcrum-e2e.
func cacheDir() string {
	if d := os.Getenv("FULCRUM_E2E_CACHE"); d != "" {
		return d
	}
	return "/var/cache/fulcrum-e2e"
}

// mirror is FULCRUM_E2E_MIRROR, or the first Debian URI in apt's sources,
// or deb.debian.org.
func mirror() string {
	if m := os.Getenv("FULCRUM_E2E_MIRROR"); m != "" {
		return m
	}
	if b, err := os.ReadFile("/etc/apt/sources.list.d/debian.sources"); err == nil {
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "URIs:" && strings.HasSuffix(strings.TrimRight(f[1], "/"), "/debian") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// rootfs returns the cached tree, building it when it is absent or
// incomplete (no marker, or a marker for other arguments). A build goes to
// a side directory renamed into place only when it is done, so an
// interrupted build is never mistaken for a tree.
func rootfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(cacheDir(), "rootfs-bookworm")
	want := "debootstrap " + strings.Join(debootstrapArgs, " ") + "\n"
	if b, err := os.ReadFile(filepath.Join(dir, markerName)); err == nil && string(b) == want {
		t.Logf("rootfs: reusing %s", dir)
		return dir
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Fatalf("rootfs: no debootstrap (run `make e2e`, which installs it with test/deps.sh e2e)")
	}
	if err := os.MkdirAll(cacheDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	part := dir + ".partial"
	for _, d := range []string{part, dir} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatalf("rootfs: removing %s: %v", d, err)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	args := append(append([]string{}, debootstrapArgs[:len(debootstrapArgs)-1]...), debootstrapArgs[len(debootstrapArgs)-1], part, mirror())
	t.Logf("rootfs: debootstrap %s (about two minutes, once)", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, "debootstrap", args...)
	cmd.WaitDelay = 5 * time.Second
	log, err := os.Create(filepath.Join(cacheDir(), "debootstrap.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		t.Fatalf("rootfs: debootstrap: %v (see %s)", err, log.Name())
	}
	if err := finishTree(part); err != nil {
		t.Fatalf("rootfs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(part, markerName), []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(part, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("rootfs: built %s in %v", dir, time.Since(start).Round(time.Second))
	return dir
}

// finishTree trims the fresh tree: the downloaded .debs are not needed, and
// an empty machine-id lets each box make its own on first boot.
func finishTree(dir string) error {
	debs, _ := filepath.Glob(filepath.Join(dir, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	for _, need := range []string{"usr/lib/systemd/systemd", "usr/bin/dbus-daemon", "usr/bin/ip", "usr/sbin/adduser", "usr/bin/dpkg"} {
		if _, err := os.Stat(filepath.Join(dir, need)); err != nil {
			return fmt.Errorf("the tree has no /%s: %w", need, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/machine-id"), nil, 0o444); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
