package boxes

import (
	"os"
	"os/exec"
	"testing"

	"github.com/fulcrum-lb/fulcrum/test/netlab"
)

// requireE2E skips unless `make e2e` runs the test: it boots three systemd
// containers and installs the package, which takes minutes and a rootfs.
func requireE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("FULCRUM_E2E") != "1" {
		t.Skip("the box tests (install the .deb on three systemd-nspawn boxes) run with `make e2e`")
	}
	netlab.Require(t)
	for _, c := range []string{"systemd-nspawn", "nsenter", "mount", "umount", "dpkg-deb"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is missing (`make e2e` installs what the box tests need)", c)
		}
	}
}
