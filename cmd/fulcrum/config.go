package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/state"
)

func (c *cli) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check proxy configs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(c.configValidateCmd())
	return cmd
}

// validateResult is the --json output of config validate.
type validateResult struct {
	File      string             `json:"file"`
	Valid     bool               `json:"valid"`
	Frontends int                `json:"frontends"`
	Backends  int                `json:"backends"`
	Faults    []state.FieldError `json:"faults,omitempty"`
	Error     string             `json:"error,omitempty"`
}

func (c *cli) configValidateCmd() *cobra.Command {
	var file string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate -f FILE",
		Short: "Check a proxy config and list every fault by its path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("config validate: -f FILE is required")
			}
			return c.validate(file, asJSON)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "proxy config file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func (c *cli) validate(file string, asJSON bool) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	res := validateResult{File: file}
	cfg, perr := state.Parse(data)
	if perr == nil {
		res.Valid, res.Frontends, res.Backends = true, len(cfg.Frontends), len(cfg.Backends)
	} else if es, ok := errors.AsType[state.Errors](perr); ok {
		res.Faults = es
	} else {
		res.Error = perr.Error()
	}

	if asJSON {
		out, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s\n", out)
	} else if res.Valid {
		fmt.Fprintf(c.stdout, "%s: valid (%d frontends, %d backends)\n", file, res.Frontends, res.Backends)
	} else {
		for _, f := range res.Faults {
			fmt.Fprintln(c.stderr, f.Error())
		}
	}

	switch {
	case res.Valid:
		return nil
	case len(res.Faults) > 0:
		return fmt.Errorf("%s: invalid, %d fault(s)", file, len(res.Faults))
	}
	return fmt.Errorf("%s: %w", file, perr)
}
