package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
)

// callTimeout bounds one call to the agent.
const callTimeout = time.Minute

// socketPath finds the agent's admin socket: --socket, then
// $FULCRUM_ADMIN_SOCKET or $FULCRUM_SOCKET, then admin.socket of the node
// config at --config, then the default. A missing node config file is
// skipped unless --config named it.
func (c *cli) socketPath(cmd *cobra.Command) (string, error) {
	if c.socket != "" {
		return c.socket, nil
	}
	for _, env := range []string{"FULCRUM_ADMIN_SOCKET", "FULCRUM_SOCKET"} {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	nc, err := cluster.LoadNodeConfig(c.configPath, nil)
	switch {
	case err == nil:
		return nc.Admin.Socket, nil
	case errors.Is(err, fs.ErrNotExist) && !cmd.Flags().Changed("config"):
		return cluster.DefaultAdminSocket, nil
	}
	return "", nodeConfigError(c.configPath, err)
}

// adminClient returns a client of the agent and a context for one call.
func (c *cli) adminClient(cmd *cobra.Command) (*cluster.AdminClient, context.Context, context.CancelFunc, error) {
	client, err := c.newClient(cmd)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	return client, ctx, cancel, nil
}

// newClient is a client of the local agent's socket, or with --remote of
// a node's API over mutual TLS.
func (c *cli) newClient(cmd *cobra.Command) (*cluster.AdminClient, error) {
	if c.remote != "" {
		if c.cert == "" || c.key == "" || c.ca == "" {
			return nil, errors.New("--remote needs --cert, --key and --ca (from fulcrum cluster issue-cert)")
		}
		return cluster.NewRemoteAdminClient(c.remote, c.cert, c.key, c.ca)
	}
	sock, err := c.socketPath(cmd)
	if err != nil {
		return nil, err
	}
	return cluster.NewAdminClient(sock), nil
}

// nodeConfigError says which node config is at fault, listing every fault.
func nodeConfigError(path string, err error) error {
	if list, n, ok := faultList(err); ok {
		return fmt.Errorf("node config %s has %d fault(s):\n%s", path, n, list)
	}
	return fmt.Errorf("node config %s: %w", path, err)
}
