package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// versionInfo is the --json output of version.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

func (c *cli) versionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !asJSON {
				fmt.Fprintf(c.stdout, "fulcrum %s\n", version)
				return nil
			}
			out, err := json.MarshalIndent(versionInfo{
				Version: version, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
			}, "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s\n", out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print version details as JSON")
	return cmd
}
