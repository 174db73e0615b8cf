package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAdminSocketRefusesOutsiders: the admin socket is mode 0660, so a
// user outside its owner and group cannot talk to the agent, while root
// (and the group) can.
func TestAdminSocketRefusesOutsiders(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs as root; this test needs root to run a client as another user")
		}
		t.Skip("needs root to run a client as another user")
	}
	n := startNode(t, 1)
	sock := filepath.Join(n.dir, "admin.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("admin socket mode %v, want 0660", fi.Mode().Perm())
	}
	// Let "nobody" reach the socket's directory and run the binary, so
	// that only the socket's own permissions stand in the way.
	for _, d := range []string{n.dir, filepath.Dir(n.dir)} {
		os.Chmod(d, 0o755)
	}
	bin := filepath.Join(t.TempDir(), "fulcrum")
	data, err := os.ReadFile(n.bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(bin), 0o755)

	asRoot, err := exec.Command(bin, "stats", "--socket", sock).CombinedOutput()
	if err != nil {
		t.Fatalf("root cannot use the socket: %v\n%s", err, asRoot)
	}
	cmd := exec.Command(bin, "stats", "--socket", sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("user nobody read the stats through the admin socket:\n%s", out)
	}
	if !strings.Contains(string(out), "permission denied") {
		t.Errorf("refusal should say permission denied, got:\n%s", out)
	}
}
