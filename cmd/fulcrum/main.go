// Command fulcrum is the one binary of Fulcrum: the agent (the daemon) and
// the commands that check configs and talk to a running agent.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/cluster"
	"github.com/fulcrum-lb/fulcrum/state"
)

// version is set at build time:
// -ldflags "-X main.version=$(git describe --tags --always --dirty)".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit code. Errors are
// printed as "fulcrum: <message>" on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	root := c.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "fulcrum: %v\n", err)
	if !c.started && cmd != nil {
		// A flag or argument error: the command never ran.
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return 1
}

// cli holds what every command shares: the output streams and the
// persistent flags.
type cli struct {
	stdout, stderr io.Writer
	configPath     string
	socket         string
	// remote, cert, key, ca: talk to a node's API over mutual TLS instead.
	remote, cert, key, ca string
	// started is set once the command line is parsed and a command runs.
	started bool
}

func (c *cli) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "fulcrum",
		Short: "Fulcrum, a highly available load balancer",
		Long: "Fulcrum is a load balancer and reverse proxy in the spirit of HAProxy.\n" +
			"`fulcrum agent` runs the daemon; the other commands check configs or talk to it.",
		// run prints errors, and for flag and argument errors a pointer to
		// the usage.
		SilenceErrors:    true,
		SilenceUsage:     true,
		PersistentPreRun: func(*cobra.Command, []string) { c.started = true },
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.configPath, "config", cluster.DefaultNodeConfigPath, "node config file")
	pf.StringVar(&c.remote, "remote", "", "talk to a node's API (host:api_port) over mutual TLS instead of the local socket")
	pf.StringVar(&c.cert, "cert", "", "operator certificate for --remote (fulcrum cluster issue-cert)")
	pf.StringVar(&c.key, "key", "", "operator key for --remote")
	pf.StringVar(&c.ca, "ca", "", "cluster CA certificate for --remote")
	pf.StringVar(&c.socket, "socket", "", "admin socket of the agent (default: $FULCRUM_ADMIN_SOCKET, $FULCRUM_SOCKET, admin.socket of --config, "+cluster.DefaultAdminSocket+")")

	root.AddCommand(
		c.agentCmd(),
		c.configCmd(),
		c.versionCmd(),
		c.statsCmd(),
		c.reloadCmd(),
		c.serverCmd(),
		c.demoBackendCmd(),
		c.docsCmd(),
	)
	c.addClusterCommands(root)
	c.addOpsCommands(root)
	return root
}

// faultList formats every fault of err, one per line and indented, when
// err holds state.Errors; ok is false otherwise.
func faultList(err error) (list string, n int, ok bool) {
	es, ok := errors.AsType[state.Errors](err)
	if !ok {
		return "", 0, false
	}
	return "  " + strings.ReplaceAll(es.Error(), "\n", "\n  "), len(es), true
}
