package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// Require skips the test when a lab cannot be built here (not root, or no
// `ip` command), unless the environment says CI (CI=true, or any true value
// strconv.ParseBool accepts): then it fails the test, so that nothing is
// silently untested in CI.
func Require(t testing.TB) {
	t.Helper()
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		why = append(why, "no ip command (Debian package iproute2)")
	}
	if len(why) == 0 {
		return
	}
	skipOrFail(t, "netlab: cannot build a network-namespace lab: "+strings.Join(why, ", "))
}

// RequireCommands is Require for commands a test runs (pkg: the Debian
// package that has them).
func RequireCommands(t testing.TB, pkg string, names ...string) {
	t.Helper()
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		skipOrFail(t, fmt.Sprintf("%v not installed (Debian package %s; test/deps.sh installs it)", missing, pkg))
	}
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}
