package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
	"github.com/fulcrum-lb/fulcrum/state"
)

// addClusterCommands adds the `cluster` command group to root and the
// replicated-config commands (apply, show, history, diff, rollback) to its
// `config` group.
func (c *cli) addClusterCommands(root *cobra.Command) {
	root.AddCommand(c.clusterCmd())
	for _, sub := range root.Commands() {
		if sub.Name() == "config" {
			sub.Short = "Check proxy configs, and apply and inspect the cluster's config"
			sub.AddCommand(c.configClusterCmds()...)
		}
	}
}

func (c *cli) clusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Form, inspect and change the cluster of Fulcrum nodes",
		Long: "Form a cluster of two or three nodes and look after it. Each command asks the local\n" +
			"agent over its admin socket (see --config and --socket); the agent must be running.\n" +
			"Every command takes --json.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		c.clusterInitCmd(),
		c.clusterJoinCmd(),
		c.clusterStatusCmd(),
		c.clusterMembersCmd(),
		c.clusterLeaveCmd(),
		c.clusterRemoveCmd(),
		c.clusterFailoverCmd(),
	)
	return cmd
}

// withAgent runs fn with a client of the local agent and a context
// bounded by callTimeout plus extra.
func (c *cli) withAgent(cmd *cobra.Command, extra time.Duration, fn func(context.Context, *cluster.AdminClient) error) error {
	client, err := c.newClient(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout+extra)
	defer cancel()
	defer client.Close()
	return fn(ctx, client)
}

// failed prints the faults an agent's refusal carries, one per line on
// stderr, and returns the refusal prefixed with what failed.
func (c *cli) failed(what string, err error) error {
	if ae, ok := errors.AsType[*cluster.APIError](err); ok {
		for _, f := range ae.Faults {
			fmt.Fprintln(c.stderr, f.Error())
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (c *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

func (c *cli) clusterInitCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make this node the first member of a new cluster and print the join command",
		Long: "Make the local agent the first member of a new cluster. Its current proxy config file\n" +
			"becomes config version 1, so the node never stops serving; from then on the config\n" +
			"changes with `fulcrum config apply`. Prints the command (with its token) that joins\n" +
			"the other nodes. --json prints {\"token\": ..., \"join_command\": ...}.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				res, err := cl.ClusterInit(ctx)
				if err != nil {
					return c.failed("cluster init", err)
				}
				if asJSON {
					return c.printJSON(res)
				}
				fmt.Fprintf(c.stdout, "cluster initialised: this node's proxy config is now config version 1.\n"+
					"On each other node, with its agent running, run:\n\n  %s\n\n"+
					"The token admits nodes to the cluster: keep it secret.\n", res.JoinCommand)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, `print {"token", "join_command"} as JSON`)
	return cmd
}

// joinResult is the --json output of cluster join.
type joinResult struct {
	Joined        bool   `json:"joined"`
	Address       string `json:"address"`
	Node          string `json:"node"`
	Leader        string `json:"leader"`
	ConfigVersion uint64 `json:"config_version"`
}

func (c *cli) clusterJoinCmd() *cobra.Command {
	var token string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "join ADDR[:PORT] --token TOKEN",
		Short: "Join this node to the cluster of the member at ADDR",
		Long: "Join the local agent to the cluster of the member at ADDR (its cluster.api_port,\n" +
			"7443 by default) with the token that `fulcrum cluster init` printed. The node then runs\n" +
			"the cluster's config: its own proxy config file is set aside.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				return errors.New("cluster join: --token is required (`fulcrum cluster init` on the first node prints it)")
			}
			addr := args[0]
			return c.withAgent(cmd, time.Minute, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.ClusterJoin(ctx, addr, token); err != nil {
					return c.failed("cluster join "+addr, err)
				}
				res := joinResult{Joined: true, Address: addr}
				if st, err := cl.ClusterStatus(ctx); err == nil {
					res.Node, res.Leader, res.ConfigVersion = st.Node, st.Leader, st.ConfigVersion
				}
				if asJSON {
					return c.printJSON(res)
				}
				fmt.Fprintf(c.stdout, "joined the cluster through %s", addr)
				if res.Leader != "" {
					fmt.Fprintf(c.stdout, " (leader %s, config version %d)", res.Leader, res.ConfigVersion)
				}
				fmt.Fprintln(c.stdout, "; this node now runs the cluster's config and its own proxy config file is set aside")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "join token printed by `fulcrum cluster init`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (c *cli) clusterStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster on one screen: leader, quorum, nodes, config versions, warnings",
		Long: "Show the cluster as the local node sees it: the leader, the Raft term, whether there\n" +
			"is a quorum, every node (address, role, gossip and Raft state, the config version it\n" +
			"runs), the cluster's config version and any warnings. --json prints {\"leader\", \"term\",\n" +
			"\"quorum\", \"nodes\": [{\"name\", \"address\", \"gossip\", \"raft\", \"applied_config_version\", ...}],\n" +
			"\"config_version\", \"warnings\"}.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				st, err := cl.ClusterStatus(ctx)
				if err != nil {
					return c.failed("cluster status", err)
				}
				if asJSON {
					return c.printJSON(st)
				}
				return writeClusterStatus(c.stdout, st)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// writeClusterStatus prints the status screen: a summary line, the nodes'
// table (this node marked *), the warnings.
func writeClusterStatus(w io.Writer, st cluster.ClusterStatus) error {
	if !st.Clustered {
		fmt.Fprintf(w, "node %s: standalone (not in a cluster)\n", st.Node)
		writeWarnings(w, st.Warnings)
		return nil
	}
	leader := st.Leader
	if leader == "" {
		leader = "none"
	}
	fmt.Fprintf(w, "leader %s   term %d   quorum %s   config version %d\n\n", leader, st.Term, yesNo(st.Quorum), st.ConfigVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tROLE\tGOSSIP\tRAFT\tAPPLIED\tVERSION")
	for _, n := range st.Nodes {
		name := n.Name
		if name == st.Node {
			name += " *"
		}
		applied := strconv.FormatUint(n.AppliedConfigVersion, 10)
		switch {
		case n.ApplyError != "":
			applied += " (failed)"
		case n.AppliedConfigVersion < st.ConfigVersion && n.Gossip == "alive":
			applied += " (pending)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, n.Address, orDash(n.Role), n.Gossip, n.Raft, applied, orDash(n.Version))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeVIPHolders(w, st, time.Now())
	writeWarnings(w, st.Warnings)
	return nil
}

// writeVIPHolders prints the VIP section of the status screen: the rule
// in force and each holder, since when and its last announcement.
func writeVIPHolders(w io.Writer, st cluster.ClusterStatus, now time.Time) {
	if st.VIP.Mode == "" || st.VIP.Mode == state.VIPModeNone {
		return
	}
	fmt.Fprintf(w, "\nvip %s %s", st.VIP.Mode, strings.Join(st.VIP.Addresses, " "))
	if st.VIP.WithoutQuorum != "" {
		fmt.Fprintf(w, "   without quorum: %s", st.VIP.WithoutQuorum)
	}
	fmt.Fprintln(w)
	announce := "GARP"
	if st.VIP.Mode == state.VIPModeActiveActive {
		announce = "BGP announcement"
	}
	held := false
	for _, n := range st.Nodes {
		if n.VIP == nil {
			continue
		}
		held = true
		fmt.Fprintf(w, "  held by %s since %s, last %s %s\n", n.Name, when(n.VIP.Since, now), announce, when(n.VIP.LastAnnounce, now))
	}
	if !held {
		fmt.Fprintln(w, "  held by no node")
	}
}

// when prints t as a clock time with its age ("-" for unknown).
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("15:04:05"), now.Sub(t).Round(time.Second))
}

func writeWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	fmt.Fprintln(w, "\nwarnings:")
	for _, s := range warnings {
		fmt.Fprintf(w, "  - %s\n", s)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// memberJSON is one gossip member in cluster members --json.
type memberJSON struct {
	Name                 string `json:"name"`
	Address              string `json:"address"`
	State                string `json:"state"`
	ID                   string `json:"id"`
	Role                 string `json:"role"`
	RaftAddr             string `json:"raft_addr"`
	APIAddr              string `json:"api_addr"`
	Version              string `json:"version"`
	AppliedConfigVersion uint64 `json:"applied_config_version"`
	ApplyError           string `json:"apply_error,omitempty"`
}

func (c *cli) clusterMembersCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the gossip members as this node sees them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				ms, err := cl.Members(ctx)
				if err != nil {
					return c.failed("cluster members", err)
				}
				out := make([]memberJSON, 0, len(ms))
				for _, m := range ms {
					out = append(out, memberJSON{Name: m.Name, Address: m.Addr, State: m.State, ID: m.Meta.ID,
						Role: m.Meta.Role, RaftAddr: m.Meta.RaftAddr, APIAddr: m.Meta.APIAddr, Version: m.Meta.Version,
						AppliedConfigVersion: m.Meta.Applied, ApplyError: m.Meta.ApplyError})
				}
				slices.SortFunc(out, func(a, b memberJSON) int { return strings.Compare(a.Name, b.Name) })
				if asJSON {
					return c.printJSON(out)
				}
				tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tGOSSIP ADDRESS\tSTATE\tROLE\tRAFT\tAPI\tAPPLIED\tVERSION")
				for _, m := range out {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", m.Name, m.Address, m.State, orDash(m.Role),
						orDash(m.RaftAddr), orDash(m.APIAddr), m.AppliedConfigVersion, orDash(m.Version))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the members as JSON")
	return cmd
}

// okResult is the --json output of a command that only succeeds.
type okResult struct {
	OK     bool   `json:"ok"`
	Node   string `json:"node,omitempty"`
	Leader string `json:"leader,omitempty"`
}

func (c *cli) clusterLeaveCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "Take this node out of the cluster for good; it goes back to standalone",
		Long: "Take the local node out of the cluster: a leader hands over first, then the node\n" +
			"leaves the Raft configuration and gossip, forgets its cluster state and serves its own\n" +
			"proxy config file again. Stopping the agent is not leaving: a restart keeps the membership.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, time.Minute, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.ClusterLeave(ctx); err != nil {
					return c.failed("cluster leave", err)
				}
				if asJSON {
					return c.printJSON(okResult{OK: true})
				}
				fmt.Fprintln(c.stdout, "left the cluster: this node is standalone again and serves its proxy config file")
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (c *cli) clusterRemoveCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "remove NODE",
		Short: "Take another node out of the cluster",
		Long: "Take the node named NODE out of the cluster's Raft configuration, as when it is gone\n" +
			"for good. To join again it must wipe its data dir first.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.ClusterRemove(ctx, node); err != nil {
					return c.failed("cluster remove "+node, err)
				}
				if asJSON {
					return c.printJSON(okResult{OK: true, Node: node})
				}
				fmt.Fprintf(c.stdout, "removed %s from the cluster\n", node)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (c *cli) clusterFailoverCmd() *cobra.Command {
	var to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "failover [--to NODE]",
		Short: "Hand the leadership (and with it an active-passive VIP) to another node",
		Long: "Make the leader hand Raft leadership to NODE, or to the most up-to-date voter.\n" +
			"Run it on the leader (see `fulcrum cluster status`).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				before, _ := cl.ClusterStatus(ctx)
				if err := cl.ClusterFailover(ctx, to); err != nil {
					return c.failed("cluster failover", err)
				}
				// Report the new leader once this node knows it.
				var leader string
				deadline := time.Now().Add(5 * time.Second)
				for time.Now().Before(deadline) {
					if st, err := cl.ClusterStatus(ctx); err == nil && st.Leader != "" && st.Leader != before.Leader {
						leader = st.Leader
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
				if asJSON {
					return c.printJSON(okResult{OK: true, Leader: leader})
				}
				if leader == "" {
					fmt.Fprintln(c.stdout, "leadership handed over; the new leader is not known yet (see `fulcrum cluster status`)")
					return nil
				}
				fmt.Fprintf(c.stdout, "leadership handed over to %s\n", leader)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "node to hand the leadership to (default: the most up-to-date voter)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
