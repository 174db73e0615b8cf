package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDocsWritesManPagesAndCompletion(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	man := filepath.Join(dir, "man")
	bash := filepath.Join(dir, "completion", "fulcrum")
	code, _, stderr := runCLI(t, "docs", "--man", man, "--bash", bash)
	if code != 0 {
		t.Fatalf("docs: exit %d: %s", code, stderr)
	}
	for _, page := range []string{"fulcrum.1", "fulcrum-agent.1", "fulcrum-cluster-join.1", "fulcrum-node-drain.1"} {
		data, err := os.ReadFile(filepath.Join(man, page))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), `.TH "`) || !strings.Contains(string(data), "Nov 2023") {
			t.Errorf("%s: no man header with the SOURCE_DATE_EPOCH date:\n%.300s", page, data)
		}
	}
	if _, err := os.Stat(filepath.Join(man, "fulcrum-docs.1")); err == nil {
		t.Error("the hidden docs command got a man page")
	}
	data, err := os.ReadFile(bash)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "complete -o default -F __start_fulcrum fulcrum") {
		t.Errorf("bash completion does not register fulcrum:\n%.300s", data)
	}
}

func TestDocsIsHiddenAndNeedsAnOutput(t *testing.T) {
	_, out, _ := runCLI(t, "--help")
	if strings.Contains(out, "docs") {
		t.Errorf("docs shows in the help:\n%s", out)
	}
	if code, _, stderr := runCLI(t, "docs"); code != 1 || !strings.Contains(stderr, "nothing to do") {
		t.Errorf("docs without flags: exit %d, stderr %q", code, stderr)
	}
}
