package netlab

import (
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
	msg := "netlab: cannot build a network-namespace lab: " + strings.Join(why, ", ")
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}
