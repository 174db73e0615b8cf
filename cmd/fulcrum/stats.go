package main

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fulcrum-lb/fulcrum/proxy"
)

func (c *cli) statsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print the agent's counters per frontend, backend and server",
		Long: "Print the running agent's counters like HAProxy's `show stat`: one row per frontend,\n" +
			"then per backend its servers and a BACKEND row. --json prints the admin API's JSON.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, ctx, cancel, err := c.adminClient(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			defer client.Close()
			if asJSON {
				raw, err := client.StatsJSON(ctx)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.stdout, "%s\n", bytes.TrimSpace(raw))
				return err
			}
			st, err := client.Stats(ctx)
			if err != nil {
				return err
			}
			return writeStatsTable(c.stdout, st)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the JSON as the agent sends it")
	return cmd
}

var statsColumns = []string{
	"pxname", "svname", "status", "scur", "smax", "stot", "bin", "bout",
	"2xx", "4xx", "5xx", "ereq", "econ", "eresp", "wretr", "wredis", "qcur", "qmax",
}

// na marks a column that does not apply to the row, as HAProxy leaves it
// empty.
const na = "-"

// writeStatsTable prints st as HAProxy's `show stat` would: frontends, then
// each backend's servers followed by its BACKEND row.
func writeStatsTable(w io.Writer, st proxy.Stats) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cells ...string) {
		for i, s := range cells {
			if i > 0 {
				io.WriteString(tw, "\t")
			}
			io.WriteString(tw, s)
		}
		io.WriteString(tw, "\n")
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	common := func(v proxy.CounterValues) []string {
		return []string{n(v.CurSessions), n(v.MaxSessions), n(v.TotalSessions), n(v.BytesIn), n(v.BytesOut),
			n(v.Resp2xx), n(v.Resp4xx), n(v.Resp5xx)}
	}
	serverSide := func(v proxy.CounterValues) []string {
		return []string{na, n(v.ConnErrors), n(v.RespErrors), n(v.Retries), n(v.Redispatches), n(v.QueueCur), n(v.QueueMax)}
	}

	row(statsColumns...)
	for _, f := range st.Frontends {
		cells := append([]string{f.Name, "FRONTEND", "OPEN"}, common(f.CounterValues)...)
		cells = append(cells, n(f.ReqErrors), na, na, na, na, na, na)
		row(cells...)
	}
	for _, b := range st.Backends {
		status := "DOWN"
		for _, s := range b.Servers {
			cells := append([]string{b.Name, s.Name, s.Status}, common(s.CounterValues)...)
			row(append(cells, serverSide(s.CounterValues)...)...)
			if s.Status == "UP" {
				status = "UP"
			}
		}
		cells := append([]string{b.Name, "BACKEND", status}, common(b.CounterValues)...)
		row(append(cells, serverSide(b.CounterValues)...)...)
	}
	return tw.Flush()
}
