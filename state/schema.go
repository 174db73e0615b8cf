package state

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// schemaLevel is the proxy config schema this build understands. It only
// grows: a release that adds config keys raises it and lists the keys in
// keySince. It is a build constant (set with -ldflags -X to build an
// older-looking package for upgrade tests), never changed at run time.
var schemaLevel = "3"

// SchemaLevel returns the config schema level of this build.
func SchemaLevel() int {
	n, err := strconv.Atoi(schemaLevel)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// keySince names the schema level that brought each key added after
// level 1, by dotted path ("vip.bgp"); list items are matched without
// their index. A key not listed is level 1.
func keySince(path string) int {
	switch path {
	case "vip", "global.health_verdict": // level 2: the cluster era
		return 2
	case "vip.handover_timeout":
		return 3
	}
	return 1
}

// RequiredSchema returns the schema level a config document needs (the
// highest level of the keys it uses) and the first key at that level.
func RequiredSchema(doc []byte) (int, string, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	if err := dec.Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return 0, "", fmt.Errorf("decode: %w", err)
	}
	level, key := 1, ""
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				if l := keySince(p); l > level {
					level, key = l, p
				}
				walk(n.Content[i+1], p)
			}
		}
	}
	walk(&root, "")
	return level, key, nil
}

// SchemaGap explains why a document cannot be applied to a cluster whose
// oldest node understands schema level oldest: "" when it can.
func SchemaGap(doc []byte, oldest int, oldestNodes []string) string {
	need, key, err := RequiredSchema(doc)
	if err != nil || need <= oldest {
		return ""
	}
	slices.Sort(oldestNodes)
	return fmt.Sprintf("the config uses %s (config schema %d), which %v, still at schema %d, does not know: upgrade every node first",
		key, need, oldestNodes, oldest)
}
