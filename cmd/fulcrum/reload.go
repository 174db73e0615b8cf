package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
)

func (c *cli) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the agent reload its proxy config file",
		Long: "Make the agent re-read its proxy config file, as SIGHUP does. An invalid file is\n" +
			"refused with every fault listed, and the running config stays.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, ctx, cancel, err := c.adminClient(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			defer client.Close()
			if err := client.Reload(ctx); err != nil {
				if ae, ok := errors.AsType[*cluster.APIError](err); ok {
					for _, f := range ae.Faults {
						fmt.Fprintln(c.stderr, f.Error())
					}
				}
				return fmt.Errorf("reload: %w", err)
			}
			fmt.Fprintln(c.stdout, "proxy config reloaded")
			return nil
		},
	}
}
