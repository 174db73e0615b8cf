package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
)

func (c *cli) agentCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "agent",
		Short: "Run the Fulcrum daemon",
		Long: "Run the daemon: load the node config (--config), serve the proxy config it names,\n" +
			"serve the admin API. SIGHUP reloads the proxy config; SIGTERM or SIGINT stop gracefully.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return c.runAgent(cmd.Context()) },
	}
}

func (c *cli) runAgent(ctx context.Context) error {
	set := map[string]string{}
	if c.socket != "" {
		abs, err := filepath.Abs(c.socket)
		if err != nil {
			return err
		}
		set["admin.socket"] = abs
	}
	nc, err := cluster.LoadNodeConfig(c.configPath, set)
	if err != nil {
		return nodeConfigError(c.configPath, err)
	}
	log := nc.Log.NewLogger(c.stderr)
	agent, err := cluster.NewAgent(nc, log, cluster.WithVersion(version))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1) // one pending SIGHUP: a burst is one reload
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				// Reload logs its own faults; the agent keeps running.
				if err := agent.Reload(); errors.Is(err, cluster.ErrNotRunning) {
					log.Warn("SIGHUP ignored", "err", err)
				}
			}
		}
	})
	defer wg.Wait()
	defer stop() // runs before wg.Wait: ends the SIGHUP loop

	if err := agent.Run(ctx); err != nil {
		if list, n, ok := faultList(err); ok {
			return fmt.Errorf("proxy config %s has %d fault(s):\n%s", nc.ProxyConfig, n, list)
		}
		return err
	}
	return nil
}
