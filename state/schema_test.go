package state

import (
	"strings"
	"testing"
)

func TestRequiredSchemaWalksEveryKey(t *testing.T) {
	level, key, err := RequiredSchema([]byte("frontends: [{name: a}]\n"))
	if err != nil || level != 1 || key != "" {
		t.Errorf("a level-1 document: %d %q %v", level, key, err)
	}
	level, key, err = RequiredSchema([]byte("frontends: [{name: a}]\nvip: {mode: none}\n"))
	if err != nil || level != 2 || key != "vip" {
		t.Errorf("a document with a vip section: %d %q %v, want 2 vip", level, key, err)
	}
	level, key, err = RequiredSchema([]byte("vip: {mode: none, handover_timeout: 1s}\n"))
	if err != nil || level != 3 || key != "vip.handover_timeout" {
		t.Errorf("a document with vip.handover_timeout: %d %q %v, want 3 vip.handover_timeout", level, key, err)
	}
	if SchemaLevel() != 3 {
		t.Errorf("this build's SchemaLevel is %d, want 3 (vip.handover_timeout)", SchemaLevel())
	}
	if _, _, err := RequiredSchema([]byte("a: [")); err == nil {
		t.Error("broken YAML accepted")
	}
	if SchemaLevel() < 1 {
		t.Errorf("SchemaLevel %d", SchemaLevel())
	}
}

func TestSchemaGapNamesKeyAndNodes(t *testing.T) {
	doc := []byte("global: {maxconn: 5}\nvip: {mode: none}\n")
	if gap := SchemaGap(doc, 2, []string{"lb2"}); gap != "" {
		t.Errorf("no gap expected at level 2: %s", gap)
	}
	if gap := SchemaGap([]byte("global: {maxconn: 5}\n"), 1, []string{"lb2"}); gap != "" {
		t.Errorf("a level-1 document on a level-1 node: %s", gap)
	}
	gap := SchemaGap(doc, 1, []string{"lb3", "lb2"})
	for _, want := range []string{"uses vip (config schema 2)", "[lb2 lb3]", "schema 1", "upgrade every node first"} {
		if !strings.Contains(gap, want) {
			t.Errorf("gap %q lacks %q", gap, want)
		}
	}
}
