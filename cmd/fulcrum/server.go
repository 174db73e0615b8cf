package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
	"github.com/fulcrum-lb/fulcrum/health"
)

// serverRef is a BACKEND/SERVER argument.
type serverRef struct{ backend, server string }

func (r serverRef) String() string { return r.backend + "/" + r.server }

// parseServerRef parses BACKEND/SERVER: two non-empty names, one slash.
func parseServerRef(arg string) (serverRef, error) {
	b, s, ok := strings.Cut(arg, "/")
	if !ok || b == "" || s == "" || strings.Contains(s, "/") {
		return serverRef{}, fmt.Errorf("invalid server %q: want BACKEND/SERVER, such as app/app1", arg)
	}
	return serverRef{backend: b, server: s}, nil
}

// weightReset is the weight argument that drops the runtime weight.
const weightReset = "reset"

// parseWeightArg parses N (0 to 256) or reset, which gives -1.
func parseWeightArg(arg string) (int, error) {
	if strings.EqualFold(arg, weightReset) {
		return -1, nil
	}
	w, err := strconv.Atoi(arg)
	if err != nil || w < 0 || w > 256 {
		return 0, fmt.Errorf("invalid weight %q: want an integer from 0 to 256, or reset", arg)
	}
	return w, nil
}

func (c *cli) serverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Change a server's administrative state or weight at runtime",
		Long: "Change a server's administrative state or weight on the running agent, as HAProxy's\n" +
			"`set server` does. The change holds until the next change, across reloads, while the\n" +
			"server stays in the proxy config; health checks keep running meanwhile.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, a := range []struct {
		name, short string
		admin       health.Admin
	}{
		{"enable", "Put a server back in rotation (admin state READY)", health.AdminReady},
		{"disable", "Take a server out of rotation for maintenance (MAINT): no traffic at all", health.AdminMaint},
		{"drain", "Drain a server (DRAIN): no new sessions, existing and persistent ones go on", health.AdminDrain},
	} {
		cmd.AddCommand(c.serverAdminCmd(a.name, a.short, a.admin))
	}
	cmd.AddCommand(c.serverWeightCmd())
	return cmd
}

func (c *cli) serverAdminCmd(name, short string, admin health.Admin) *cobra.Command {
	var asJSON bool
	var ref serverRef
	cmd := &cobra.Command{
		Use:   name + " BACKEND/SERVER",
		Short: short,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("want one BACKEND/SERVER argument, got %d", len(args))
			}
			var err error
			ref, err = parseServerRef(args[0])
			return err
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.changeServer(cmd, ref, asJSON, func(ctx context.Context, cl *cluster.AdminClient) (cluster.ServerState, error) {
				return cl.SetServerAdmin(ctx, ref.backend, ref.server, admin)
			}, describeState)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's state as JSON")
	return cmd
}

func (c *cli) serverWeightCmd() *cobra.Command {
	var asJSON bool
	var ref serverRef
	var weight int
	cmd := &cobra.Command{
		Use:   "weight BACKEND/SERVER N|reset",
		Short: "Set a server's weight (0 to 256) at runtime, or reset it to the configured one",
		Long: "Set a server's weight at runtime, 0 to 256, as HAProxy's `set weight`; `reset` returns\n" +
			"to the weight of the proxy config. Slowstart and an agent's percentage still apply.\n" +
			"The order N BACKEND/SERVER is accepted too.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("want BACKEND/SERVER and a weight (N or reset), got %d argument(s)", len(args))
			}
			refArg, weightArg := args[0], args[1]
			if !strings.Contains(refArg, "/") && strings.Contains(weightArg, "/") {
				refArg, weightArg = weightArg, refArg // weight N BACKEND/SERVER
			}
			var err error
			if ref, err = parseServerRef(refArg); err != nil {
				return err
			}
			weight, err = parseWeightArg(weightArg)
			return err
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.changeServer(cmd, ref, asJSON, func(ctx context.Context, cl *cluster.AdminClient) (cluster.ServerState, error) {
				if weight < 0 {
					return cl.ResetServerWeight(ctx, ref.backend, ref.server)
				}
				return cl.SetServerWeight(ctx, ref.backend, ref.server, weight)
			}, describeWeight)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the server's state as JSON")
	return cmd
}

// changeServer makes one change through the admin API and prints the
// server's state after it: one line, or JSON.
func (c *cli) changeServer(cmd *cobra.Command, ref serverRef, asJSON bool,
	change func(context.Context, *cluster.AdminClient) (cluster.ServerState, error),
	describe func(cluster.ServerState) string,
) error {
	client, ctx, cancel, err := c.adminClient(cmd)
	if err != nil {
		return err
	}
	defer cancel()
	defer client.Close()
	st, err := change(ctx, client)
	if err != nil {
		if ae, ok := errors.AsType[*cluster.APIError](err); ok && ae.Code == cluster.CodeNotFound {
			return fmt.Errorf("%s: %w", ref, err)
		}
		return fmt.Errorf("%s %s: %w", cmd.Name(), ref, err)
	}
	if asJSON {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "%s\n", b)
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "%s/%s: %s\n", st.Backend, st.Server, describe(st))
	return err
}

// describeState is the effective state, with the operator's admin state
// when the state does not show it (a DOWN server set to DRAIN).
func describeState(st cluster.ServerState) string {
	if st.Admin != "" && st.Admin != health.AdminReady.String() && st.Admin != st.State {
		return fmt.Sprintf("%s (admin %s)", st.State, st.Admin)
	}
	return st.State
}

// describeWeight is the weight in force and where it comes from.
func describeWeight(st cluster.ServerState) string {
	var s string
	if st.WeightOverride >= 0 {
		s = fmt.Sprintf("weight %d (configured %d)", st.WeightOverride, st.ConfiguredWeight)
	} else {
		s = fmt.Sprintf("weight %d (configured)", st.ConfiguredWeight)
	}
	want := st.ConfiguredWeight
	if st.WeightOverride >= 0 {
		want = st.WeightOverride
	}
	if st.Weight != want {
		// Slowstart or an agent's percentage scales it for now.
		s += fmt.Sprintf(", effective %d", st.Weight)
	}
	return s
}
