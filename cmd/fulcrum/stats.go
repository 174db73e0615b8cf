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
	"pxname", "svname", "status", "weight", "check", "lastchg", "chkfail", "chkdown",
	"scur", "smax", "stot", "bin", "bout", "2xx", "4xx", "5xx",
	"ereq", "econ", "eresp", "wretr", "wredis", "qcur", "qmax",
}

// na marks a column that does not apply to the row, as HAProxy leaves it
// empty.
const na = "-"

// writeStatsTable prints st as HAProxy's `show stat` would: frontends, then
// each backend's servers followed by its BACKEND row. The health columns
// follow the status: the effective weight, the last check, the time since
// the last transition and the check counters.
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
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	common := func(v proxy.CounterValues) []string {
		return []string{n(v.CurSessions), n(v.MaxSessions), n(v.TotalSessions), n(v.BytesIn), n(v.BytesOut),
			n(v.Resp2xx), n(v.Resp4xx), n(v.Resp5xx)}
	}
	serverSide := func(v proxy.CounterValues) []string {
		return []string{na, n(v.ConnErrors), n(v.RespErrors), n(v.Retries), n(v.Redispatches), n(v.QueueCur), n(v.QueueMax)}
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}

	row(statsColumns...)
	for _, f := range st.Frontends {
		row(cat([]string{f.Name, "FRONTEND", "OPEN", na, na, na, na, na}, common(f.CounterValues),
			[]string{n(f.ReqErrors), na, na, na, na, na, na})...)
	}
	for _, b := range st.Backends {
		status := "DOWN"
		for _, s := range b.Servers {
			health := []string{s.Status, strconv.Itoa(s.Weight), checkCell(s), duration(s.LastChangeSec), u(s.ChkFail), u(s.ChkDown)}
			row(cat([]string{b.Name, s.Name}, health, common(s.CounterValues), serverSide(s.CounterValues))...)
			if s.Status == "UP" {
				status = "UP"
			}
		}
		health := []string{status, strconv.Itoa(backendWeight(b.Servers)), na, na, na, na}
		row(cat([]string{b.Name, "BACKEND"}, health, common(b.CounterValues), serverSide(b.CounterValues))...)
	}
	return tw.Flush()
}

// checkCell is the last check in HAProxy's words: status, HTTP code if
// any, duration ("L7OK/200 3ms", "L4CON 0ms"); "-" for a server that is
// not checked or not checked yet.
func checkCell(s proxy.ServerStats) string {
	if s.CheckStatus == "" {
		return na
	}
	c := s.CheckStatus
	if s.CheckCode != 0 {
		c += "/" + strconv.Itoa(s.CheckCode)
	}
	return c + " " + strconv.FormatInt(s.CheckDurationMs, 10) + "ms"
}

// backendWeight is HAProxy's weight of a BACKEND row: the total weight of
// the UP primary servers, or of the UP backups when no primary is UP.
func backendWeight(servers []proxy.ServerStats) int {
	var primary, backup int
	primaryUp := false
	for _, s := range servers {
		switch {
		case s.Status != "UP":
		case s.Backup:
			backup += s.Weight
		default:
			primary += s.Weight
			primaryUp = true
		}
	}
	if primaryUp {
		return primary
	}
	return backup
}

// duration formats seconds as HAProxy's stats page does, with the two
// largest units: 12s, 3m4s, 5h6m, 7d8h.
func duration(sec int64) string {
	if sec < 0 {
		sec = 0
	}
	switch {
	case sec < 60:
		return fmt.Sprintf("%ds", sec)
	case sec < 3600:
		return fmt.Sprintf("%dm%ds", sec/60, sec%60)
	case sec < 86400:
		return fmt.Sprintf("%dh%dm", sec/3600, sec%3600/60)
	}
	return fmt.Sprintf("%dd%dh", sec/86400, sec%86400/3600)
}
