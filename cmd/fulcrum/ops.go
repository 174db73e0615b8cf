package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
)

// addOpsCommands adds `vip`, `node`, and the cluster's snapshot,
// recover and issue-cert commands.
func (c *cli) addOpsCommands(root *cobra.Command) {
	root.AddCommand(c.vipCmd(), c.nodeCmd())
	for _, sub := range root.Commands() {
		if sub.Name() == "cluster" {
			sub.AddCommand(c.snapshotCmd(), c.recoverCmd(), c.issueCertCmd())
		}
	}
}

func (c *cli) vipCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vip", Short: "This node's virtual IPs: status, and the operator's override", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var asJSON bool
	status := &cobra.Command{Use: "status", Short: "Show the VIP reconcile loop: desired and actual addresses on this node", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				st, err := cl.VIPStatus(ctx)
				if err != nil {
					return c.failed("vip status", err)
				}
				if asJSON {
					return c.printJSON(st)
				}
				fmt.Fprintf(c.stdout, "mode:     %s\nholds:    %s (%s)\ndesired:  %v\nactual:   %v\n",
					st.Mode, yesNo(st.Hold), st.Reason, st.Reconcile.Desired, st.Reconcile.Actual)
				if !st.Reconcile.LastAnnounce.IsZero() {
					fmt.Fprintf(c.stdout, "announced: %s ago\n", time.Since(st.Reconcile.LastAnnounce).Round(time.Second))
				}
				if st.Reconcile.LastError != "" {
					fmt.Fprintf(c.stdout, "error:    %s\n", st.Reconcile.LastError)
				}
				return nil
			})
		}}
	status.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	var force bool
	claim := &cobra.Command{Use: "claim", Short: "Hold the VIP without quorum (release mode): only when the other nodes are down", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.ClaimVIP(ctx, force); err != nil {
					return c.failed("vip claim", err)
				}
				fmt.Fprintln(c.stdout, "VIP claimed by this node (forced)")
				return nil
			})
		}}
	claim.Flags().BoolVar(&force, "force", false, "confirm that no other node holds the VIP")
	cmd.AddCommand(status, claim)
	return cmd
}

func (c *cli) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "This node: drain (give up the VIP) and resume", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	drain := &cobra.Command{Use: "drain", Short: "Give up the VIP (hand leadership to a fit node) and take no new VIP traffic", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 10*time.Second, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.DrainNode(ctx); err != nil {
					return c.failed("node drain", err)
				}
				fmt.Fprintln(c.stdout, "node draining: it holds no VIP until `fulcrum node resume`")
				return nil
			})
		}}
	resume := &cobra.Command{Use: "resume", Short: "Undo a drain", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.ResumeNode(ctx); err != nil {
					return c.failed("node resume", err)
				}
				fmt.Fprintln(c.stdout, "node resumed")
				return nil
			})
		}}
	cmd.AddCommand(drain, resume)
	return cmd
}

func (c *cli) snapshotCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Short: "Save or restore the replicated state", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	save := &cobra.Command{Use: "save FILE", Short: "Save the replicated state (every config version, server state, nodes) to FILE", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAgent(cmd, time.Minute, func(ctx context.Context, cl *cluster.AdminClient) error {
				tmp := args[0] + ".tmp"
				f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
				if err != nil {
					return err
				}
				if err := cl.SaveSnapshot(ctx, f); err != nil {
					f.Close()
					os.Remove(tmp)
					return c.failed("snapshot save", err)
				}
				if err := f.Close(); err != nil {
					return err
				}
				if err := os.Rename(tmp, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "snapshot saved to %s\n", args[0])
				return nil
			})
		}}
	restore := &cobra.Command{Use: "restore FILE", Short: "Make the cluster take on a saved state (run on the leader; disaster recovery)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return c.withAgent(cmd, time.Minute, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.RestoreSnapshot(ctx, data); err != nil {
					return c.failed("snapshot restore", err)
				}
				fmt.Fprintf(c.stdout, "snapshot %s restored\n", args[0])
				return nil
			})
		}}
	cmd.AddCommand(save, restore)
	return cmd
}

func (c *cli) recoverCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{Use: "recover", Short: "Rebuild a working cluster from this node after a permanent loss of quorum", Args: cobra.NoArgs,
		Long: "DANGEROUS. After the other voters are gone for good, make this node the only voter of the\n" +
			"cluster (what hand-editing peers.json does in Consul). Entries that were not yet committed\n" +
			"may become committed. The other nodes must be wiped and joined again.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				return fmt.Errorf("cluster recover rewrites the Raft membership: pass --force if the other voters are gone for good")
			}
			fmt.Fprintln(c.stderr, "WARNING: recovering the cluster from this node alone; the other voters are dropped")
			return c.withAgent(cmd, 30*time.Second, func(ctx context.Context, cl *cluster.AdminClient) error {
				if err := cl.Recover(ctx, true); err != nil {
					return c.failed("cluster recover", err)
				}
				fmt.Fprintln(c.stdout, "recovered: this node is the cluster's only voter; join the others again after wiping their data")
				return nil
			})
		}}
	cmd.Flags().BoolVar(&force, "force", false, "confirm that the other voters are gone for good")
	return cmd
}

func (c *cli) issueCertCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{Use: "issue-cert NAME", Short: "Make an operator certificate for a remote CLI (mutual TLS on the API port)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withAgent(cmd, 0, func(ctx context.Context, cl *cluster.AdminClient) error {
				ic, err := cl.IssueCert(ctx, args[0])
				if err != nil {
					return c.failed("issue-cert", err)
				}
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return err
				}
				name := strings.TrimSpace(args[0])
				for file, data := range map[string]string{name + ".crt": ic.CertPEM, name + ".key": ic.KeyPEM, "ca.crt": ic.CAPEM} {
					if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o600); err != nil {
						return err
					}
				}
				fmt.Fprintf(c.stdout, "wrote %s/%s.crt, %s.key and ca.crt (serial %s); the API is on %s\n", dir, name, name, ic.Serial, ic.API)
				return nil
			})
		}}
	cmd.Flags().StringVar(&dir, "out", ".", "directory to write the certificate, key and CA into")
	return cmd
}
