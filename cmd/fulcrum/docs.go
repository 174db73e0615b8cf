package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// docsCmd is `fulcrum docs`, hidden: the package build runs it to write the
// man pages and the bash completion from this very command tree, so they
// never drift from the binary they ship with.
func (c *cli) docsCmd() *cobra.Command {
	var manDir, bashFile string
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "Write the man pages and the bash completion (for packaging)",
		Hidden: true,
		Long: "Write one man page per command (section 1) into --man DIR and the bash completion\n" +
			"script into --bash FILE. The man pages' date is $SOURCE_DATE_EPOCH when set, so\n" +
			"a build is reproducible.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manDir == "" && bashFile == "" {
				return fmt.Errorf("nothing to do: pass --man DIR and/or --bash FILE")
			}
			root := cmd.Root()
			if manDir != "" {
				if err := writeManPages(root, manDir); err != nil {
					return err
				}
			}
			if bashFile != "" {
				if err := writeBashCompletion(root, bashFile); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "directory to write the section 1 man pages into (created if missing)")
	cmd.Flags().StringVar(&bashFile, "bash", "", "file to write the bash completion script to")
	return cmd
}

// writeManPages writes fulcrum.1, fulcrum-agent.1, ... into dir: every
// command a user can run (hidden ones and help are skipped by cobra).
func writeManPages(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The "auto generated" history section would carry a date per page
	// and says nothing to the reader.
	var noAutoGenTag func(*cobra.Command)
	noAutoGenTag = func(cmd *cobra.Command) {
		cmd.DisableAutoGenTag = true
		for _, sub := range cmd.Commands() {
			noAutoGenTag(sub)
		}
	}
	noAutoGenTag(root)
	header := &doc.GenManHeader{
		Section: "1",
		Source:  "Fulcrum " + version,
		Manual:  "Fulcrum Manual",
	}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return nil
}

// writeBashCompletion writes the bash completion script (cobra's v2, with
// the commands' descriptions) to file.
func writeBashCompletion(root *cobra.Command, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := root.GenBashCompletionV2(f, true); err != nil {
		f.Close()
		return fmt.Errorf("bash completion: %w", err)
	}
	return f.Close()
}
