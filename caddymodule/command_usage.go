package caddymodule

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// cliUsageCommand is `caddy api-users usage`: a user's requests, allowed
// and refused, per hour or day, read from the store like the management
// API's GET .../team/{username}/usage (whose body --json prints).
func cliUsageCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "usage <username>",
		Short: "Shows an API user's requests, allowed and refused, per hour or day",
		Long: `
Shows the requests the gateway allowed and refused for an API user, per UTC
hour (the last 24 by default) or day (the last 30), with the most frequent
refusal reasons. The counts are those every gateway node has flushed to the
store, summed.

  caddy api-users usage inventory-sync
  caddy api-users usage inventory-sync --granularity day
  caddy api-users usage inventory-sync --from 2027-01-01T00:00:00Z --to 2027-01-02T00:00:00Z
`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var ur UsageRequest
			ur.From, _ = f.GetString("from")
			ur.To, _ = f.GetString("to")
			ur.Granularity, _ = f.GetString("granularity")
			return withApp(cmd, func(ctx context.Context, app *App) error {
				rep, err := app.UserUsage(ctx, Tenant{}, args[0], ur)
				if err != nil {
					return err
				}
				if jsonFlag(cmd) {
					return writeIndentedJSON(cmd.OutOrStdout(), okWith("usage", rep))
				}
				return printUsage(cmd.OutOrStdout(), rep)
			})
		},
	}
	f := c.Flags()
	f.String("from", "", "RFC 3339 start of the range (default: 24 hours or 30 days before --to)")
	f.String("to", "", "RFC 3339 end of the range (default: now)")
	f.String("granularity", "hour", "hour or day")
	return c
}

// topRefusals is the n most frequent refusal reasons of
// counts, most first, ties by name: "rate_limited 12, insufficient_scope 3".
func topRefusals(c UsageCounts, n int) string {
	type reason struct {
		code  string
		count int64
	}
	var rs []reason
	for code, count := range c.ByOutcome {
		if code != "allowed" && count > 0 {
			rs = append(rs, reason{code, count})
		}
	}
	if len(rs) == 0 {
		return "-"
	}
	slices.SortFunc(rs, func(a, b reason) int { return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.code, b.code)) })
	var parts []string
	for i, r := range rs {
		if i == n {
			parts = append(parts, fmt.Sprintf("%d more", len(rs)-n))
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", r.code, r.count))
	}
	return strings.Join(parts, ", ")
}

// printUsage writes a usage report as a table: one row per bucket, with
// its most frequent refusal reasons, and a row of totals.
func printUsage(out io.Writer, rep *UsageReport) error {
	where := "org " + rep.Org
	if rep.Product != nil {
		where += fmt.Sprintf(", product %d", *rep.Product)
	}
	fmt.Fprintf(out, "Usage of %s (%s) by %s, %s to %s UTC\n\n", rep.Username, where, rep.Granularity, usageLabel(rep.From, "hour"), usageLabel(rep.To, "hour"))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	column := "HOUR (UTC)"
	if rep.Granularity == "day" {
		column = "DAY (UTC)"
	}
	fmt.Fprintf(tw, "%s\tALLOWED\tREFUSED\tTOP REFUSALS\n", column)
	for _, b := range rep.Series {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", usageLabel(b.Start, rep.Granularity), b.Allowed, b.Refused, topRefusals(b.UsageCounts, 3))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%s\n", rep.Totals.Allowed, rep.Totals.Refused, topRefusals(rep.Totals.UsageCounts, 3))
	if err := tw.Flush(); err != nil {
		return err
	}
	last := "none in this range"
	if rep.LastDecisionAt != nil {
		last = *rep.LastDecisionAt
	}
	_, err := fmt.Fprintf(out, "\nlast request counted: %s\n", last)
	return err
}

// usageLabel shortens an RFC 3339 UTC time to what a bucket needs:
// "2027-01-31 14:00" for an hour, "2027-01-31" for a day.
func usageLabel(rfc3339, granularity string) string {
	s := strings.TrimSuffix(strings.Replace(rfc3339, "T", " ", 1), "Z")
	if granularity == "day" {
		s, _, _ = strings.Cut(s, " ")
		return s
	}
	if len(s) >= len("2006-01-02 15:04") {
		return s[:len("2006-01-02 15:04")]
	}
	return s
}
