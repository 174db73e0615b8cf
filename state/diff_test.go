package state

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestLineDiffGolden(t *testing.T) {
	for _, tc := range []struct {
		name, a, b, want string
	}{
		{"equal", "x\ny\n", "x\ny\n", ""},
		{"from empty", "", "a\nb\n", "@@ -0,0 +1,2 @@\n+a\n+b\n"},
		{"to empty", "a\n", "", "@@ -1 +0,0 @@\n-a\n"},
		{"one line changed", "a\nb\nc\n", "a\nB\nc\n", "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"},
		{"missing final newline", "a\nb\n", "a\nb", "@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n"},
		{
			"two hunks",
			"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n",
			"1\nTWO\n3\n4\n5\n6\n7\n8\n9\n10\n11\nTWELVE\n",
			"@@ -1,5 +1,5 @@\n 1\n-2\n+TWO\n 3\n 4\n 5\n@@ -9,4 +9,4 @@\n 9\n 10\n 11\n-12\n+TWELVE\n",
		},
		{
			"changes six lines apart share a hunk",
			"1\n2\n3\n4\n5\n6\n7\n8\n9\n",
			"1\nx\n3\n4\n5\n6\n7\n8\ny\n",
			"@@ -1,9 +1,9 @@\n 1\n-2\n+x\n 3\n 4\n 5\n 6\n 7\n 8\n-9\n+y\n",
		},
	} {
		got := lineDiff("a", "b", tc.a, tc.b)
		want := tc.want
		if want != "" {
			want = "--- a\n+++ b\n" + want
		}
		if got != want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.name, got, want)
		}
	}
}

// patch applies a unified diff to a, checking every context line and every
// hunk header against the text, and returns the result.
func patch(a, diff string) (string, error) {
	src := splitLines(a)
	var out []string
	pos := 0 // lines of src consumed
	lines := strings.SplitAfter(diff, "\n")
	for i := 2; i < len(lines) && lines[i] != ""; {
		h := strings.TrimSuffix(lines[i], "\n")
		parts := strings.Fields(h)
		if len(parts) != 4 || parts[0] != "@@" || parts[3] != "@@" {
			return "", fmt.Errorf("bad hunk header %q", h)
		}
		aStart, aLen := parseRange(strings.TrimPrefix(parts[1], "-"))
		bStart, bLen := parseRange(strings.TrimPrefix(parts[2], "+"))
		i++
		first := aStart - 1
		if aLen == 0 {
			first = aStart
		}
		out = append(out, src[pos:first]...)
		pos = first
		gotA, gotB := 0, 0
		for i < len(lines) && lines[i] != "" && !strings.HasPrefix(lines[i], "@@") {
			kind, l := lines[i][0], lines[i][1:]
			i++
			if i < len(lines) && strings.HasPrefix(lines[i], `\ No newline`) {
				l = strings.TrimSuffix(l, "\n")
				i++
			}
			switch kind {
			case ' ':
				if src[pos] != l {
					return "", fmt.Errorf("context %q does not match %q", l, src[pos])
				}
				out = append(out, l)
				pos++
				gotA++
				gotB++
			case '-':
				if src[pos] != l {
					return "", fmt.Errorf("removed %q does not match %q", l, src[pos])
				}
				pos++
				gotA++
			case '+':
				out = append(out, l)
				gotB++
			}
		}
		if gotA != aLen || gotB != bLen {
			return "", fmt.Errorf("hunk %q has %d,%d lines", h, gotA, gotB)
		}
		if len(out)-gotB+1 != bStart && bLen != 0 {
			return "", fmt.Errorf("hunk %q: b starts at %d", h, len(out)-gotB+1)
		}
	}
	out = append(out, src[pos:]...)
	return strings.Join(out, ""), nil
}

func parseRange(s string) (start, n int) {
	a, b, found := strings.Cut(s, ",")
	start, _ = strconv.Atoi(a)
	n = 1
	if found {
		n, _ = strconv.Atoi(b)
	}
	return start, n
}

// TestLineDiffPatchesAndIsMinimal diffs random documents: the diff patches
// a into b, and the edit script keeps a longest common subsequence.
func TestLineDiffPatchesAndIsMinimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	doc := func() string {
		var b strings.Builder
		for range rng.IntN(25) {
			fmt.Fprintf(&b, "line %d\n", rng.IntN(6))
		}
		if rng.IntN(4) == 0 {
			b.WriteString("tail")
		}
		return b.String()
	}
	for range 2000 {
		a, b := doc(), doc()
		d := lineDiff("a", "b", a, b)
		got, err := patch(a, d)
		if err != nil || got != b {
			t.Fatalf("patch failed (%v):\na=%q\nb=%q\ndiff:\n%s\ngot %q", err, a, b, d, got)
		}
		kept := 0
		for _, op := range diffLines(splitLines(a), splitLines(b)) {
			if op.kind == ' ' {
				kept++
			}
		}
		if want := lcsLen(splitLines(a), splitLines(b)); kept != want {
			t.Fatalf("kept %d lines, the LCS has %d:\na=%q\nb=%q", kept, want, a, b)
		}
	}
}

// lcsLen is the LCS length by plain recursion with memo, independent of
// lcsOps' table.
func lcsLen(a, b []string) int {
	memo := map[[2]int]int{}
	var f func(i, j int) int
	f = func(i, j int) int {
		if i == len(a) || j == len(b) {
			return 0
		}
		if v, ok := memo[[2]int{i, j}]; ok {
			return v
		}
		v := max(f(i+1, j), f(i, j+1))
		if a[i] == b[j] {
			v = max(v, 1+f(i+1, j+1))
		}
		memo[[2]int{i, j}] = v
		return v
	}
	return f(0, 0)
}

func TestLineDiffHugeFallsBack(t *testing.T) {
	var a, b strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&a, "a%d\n", i)
		fmt.Fprintf(&b, "b%d\n", i)
	}
	d := lineDiff("a", "b", a.String(), b.String())
	if got, err := patch(a.String(), d); err != nil || got != b.String() {
		t.Fatalf("fallback diff does not patch: %v", err)
	}
}
