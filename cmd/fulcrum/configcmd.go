package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
	"github.com/fulcrum-lb/fulcrum/state"
)

// defaultApplyWait is how long apply and rollback wait for every live node
// to run the new version.
const defaultApplyWait = 5 * time.Second

// configClusterCmds are the `config` commands that work on the cluster's
// replicated config.
func (c *cli) configClusterCmds() []*cobra.Command {
	return []*cobra.Command{
		c.configApplyCmd(),
		c.configShowCmd(),
		c.configHistoryCmd(),
		c.configDiffCmd(),
		c.configRollbackCmd(),
	}
}

func (c *cli) configApplyCmd() *cobra.Command {
	var file string
	var ifVersion uint64
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--if-version N] [--wait 5s]",
		Short: "Validate a proxy config and commit it as the cluster's new config version",
		Long: "Validate FILE here (every fault is listed by its path, and nothing is sent), then\n" +
			"commit it once through the cluster, validated again by the leader, as a new config\n" +
			"version that every node applies. --if-version N refuses the write unless the cluster\n" +
			"is at version N. Waits up to --wait for every live node to run the new version and\n" +
			"prints which did: `config version N applied on lb1, lb2 (pending: lb3)`.\n" +
			"Exit status: 0 once the version is committed, even if some nodes are still pending\n" +
			"after --wait (they are listed; `fulcrum cluster status` follows them); 1 if it was\n" +
			"refused or could not be committed (no quorum, a standalone node: see `fulcrum cluster init`).\n" +
			"--json prints {\"version\": N, \"applied\": {NODE: N, ...}, \"pending\": [NODE, ...]}.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("config apply: -f FILE is required")
			}
			doc, err := os.ReadFile(file)
			if err != nil {
				return fmt.Errorf("config apply: %w", err)
			}
			if _, err := state.Parse(doc); err != nil {
				if es, ok := errors.AsType[state.Errors](err); ok {
					for _, f := range es {
						fmt.Fprintln(c.stderr, f.Error())
					}
					return fmt.Errorf("config apply: %s: invalid, %d fault(s); nothing was applied", file, len(es))
				}
				return fmt.Errorf("config apply: %s: %w; nothing was applied", file, err)
			}
			return c.withAgent(cmd, wait, func(ctx context.Context, cl *cluster.AdminClient) error {
				res, err := cl.ApplyConfig(ctx, string(doc), ifVersion, wait)
				if err != nil {
					return c.failed("config apply", err)
				}
				return c.printApplied(res, wait, asJSON)
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "proxy config file")
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "refuse the write unless the cluster's config is at this version")
	cmd.Flags().DurationVar(&wait, "wait", defaultApplyWait, "how long to wait for every live node to run the new version")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// printApplied prints an apply or rollback result: which nodes run the
// version, which are still pending.
func (c *cli) printApplied(res cluster.ApplyResult, wait time.Duration, asJSON bool) error {
	if res.Applied == nil {
		res.Applied = map[string]uint64{}
	}
	if res.Pending == nil {
		res.Pending = []string{}
	}
	if asJSON {
		return c.printJSON(res)
	}
	if strings.HasPrefix(res.Message, "unchanged") {
		fmt.Fprintln(c.stdout, res.Message)
	}
	var applied []string
	for name, v := range res.Applied {
		if v >= res.Version {
			applied = append(applied, name)
		}
	}
	slices.Sort(applied)
	pending := slices.Sorted(slices.Values(res.Pending))
	line := fmt.Sprintf("config version %d applied on %s", res.Version, orNone(strings.Join(applied, ", ")))
	if len(pending) > 0 {
		line += fmt.Sprintf(" (pending: %s)", strings.Join(pending, ", "))
	}
	fmt.Fprintln(c.stdout, line)
	if len(pending) > 0 {
		fmt.Fprintf(c.stderr, "fulcrum: %s did not run version %d within %v; `fulcrum cluster status` shows where each node is\n",
			strings.Join(pending, ", "), res.Version, wait)
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "no node yet"
	}
	return s
}

func (c *cli) configShowCmd() *cobra.Command {
	var version uint64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show [--version N]",
		Short: "Print the cluster's config (the current version, or version N) as YAML",
		Long: "Print the proxy config document of the cluster's current config version, or of\n" +
			"version N, exactly as it was applied. --json prints the version with its document.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				cv, err := cl.ConfigVersion(ctx, version)
				if err != nil {
					return c.failed("config show", err)
				}
				if asJSON {
					return c.printJSON(cv)
				}
				if strings.TrimSpace(cv.YAML) == "" {
					fmt.Fprintf(c.stdout, "# config version %d is empty\n", cv.Version)
					return nil
				}
				_, err = io.WriteString(c.stdout, cv.YAML)
				if err == nil && !strings.HasSuffix(cv.YAML, "\n") {
					_, err = io.WriteString(c.stdout, "\n")
				}
				return err
			})
		},
	}
	cmd.Flags().Uint64Var(&version, "version", 0, "config version to print (default: the current one)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the version and its document as JSON")
	return cmd
}

func (c *cli) configHistoryCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the cluster's config versions: version, kind, time, origin",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				h, err := cl.ConfigHistory(ctx)
				if err != nil {
					return c.failed("config history", err)
				}
				if h == nil {
					h = []state.ConfigVersion{}
				}
				if asJSON {
					return c.printJSON(h)
				}
				return writeHistory(c.stdout, h)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the versions as JSON")
	return cmd
}

// writeHistory prints one row per version, the current one marked *.
func writeHistory(w io.Writer, h []state.ConfigVersion) error {
	if len(h) == 0 {
		_, err := fmt.Fprintln(w, "no config version committed yet")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tKIND\tTIME\tORIGIN\tNOTE")
	for i, cv := range h {
		v := strconv.FormatUint(cv.Version, 10)
		if i == len(h)-1 {
			v += " *"
		}
		note := ""
		if cv.Kind == state.KindRollback {
			note = fmt.Sprintf("document of version %d", cv.Source)
		}
		if cv.ParseError != "" {
			note = "no longer parses: " + cv.ParseError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v, cv.Kind, cv.Time.UTC().Format("2006-01-02 15:04:05Z"), orDash(cv.Origin), orDash(note))
	}
	return tw.Flush()
}

// diffResult is the --json output of config diff.
type diffResult struct {
	A    uint64 `json:"a"`
	B    uint64 `json:"b"`
	Diff string `json:"diff"`
}

func (c *cli) configDiffCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "diff A B",
		Short: "Show the changes from config version A to version B",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := parseVersionArg(args[0])
			if err != nil {
				return err
			}
			b, err := parseVersionArg(args[1])
			if err != nil {
				return err
			}
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				d, err := cl.ConfigDiff(ctx, a, b)
				if err != nil {
					return c.failed("config diff", err)
				}
				if asJSON {
					return c.printJSON(diffResult{A: a, B: b, Diff: d})
				}
				if d == "" {
					_, err := fmt.Fprintf(c.stdout, "versions %d and %d hold the same document\n", a, b)
					return err
				}
				_, err = io.WriteString(c.stdout, d)
				if err == nil && !strings.HasSuffix(d, "\n") {
					_, err = io.WriteString(c.stdout, "\n")
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"a", "b", "diff"} as JSON`)
	return cmd
}

func parseVersionArg(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("invalid config version %q: want a number from 1 up (see `fulcrum config history`)", s)
	}
	return v, nil
}

func (c *cli) configRollbackCmd() *cobra.Command {
	var ifVersion uint64
	var wait time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollback N [--if-version M] [--wait 5s]",
		Short: "Commit the document of config version N again, as a new version",
		Long: "Commit the proxy config document of version N again, as a new version (history is\n" +
			"never rewritten), and wait like `config apply` for every live node to run it.\n" +
			"Exit status and --json as for `config apply`.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			to, err := parseVersionArg(args[0])
			if err != nil {
				return err
			}
			return c.withAgent(cmd, wait, func(ctx context.Context, cl *cluster.AdminClient) error {
				res, err := cl.RollbackConfig(ctx, to, ifVersion, wait)
				if err != nil {
					return c.failed(fmt.Sprintf("config rollback %d", to), err)
				}
				return c.printApplied(res, wait, asJSON)
			})
		},
	}
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "refuse the rollback unless the cluster's config is at this version")
	cmd.Flags().DurationVar(&wait, "wait", defaultApplyWait, "how long to wait for every live node to run the new version")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
