package caddymodule

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// TestCLIUsage prints a user's usage from the shell: a row per hour or day,
// zeros included, the top refusal reasons, totals; --json is the
// management API's body; a bad flag is an error naming it.
func TestCLIUsage(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "create", "--product", "1337", "--username", "usage-bot", "--scopes", "devices:list")
	db, err := store.OpenSQLite(filepath.Join(filepath.Dir(cfg), "api_users.db"))
	if err != nil {
		t.Fatal(err)
	}
	err = db.AddUsage(context.Background(), []store.UsageCount{
		{UserID: "usage-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-10T10:00:00Z"), Count: 12, LastAt: at("2025-03-10T10:42:00Z")},
		{UserID: "usage-bot", Endpoint: "list-devices", Outcome: "rate_limited", Hour: at("2025-03-10T10:00:00Z"), Count: 4},
		{UserID: "usage-bot", Endpoint: "get-device", Outcome: "insufficient_scope", Hour: at("2025-03-10T10:00:00Z"), Count: 1},
		{UserID: "usage-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: at("2025-03-10T12:00:00Z"), Count: 3},
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	out := mustCLI(t, cfg, "usage", "usage-bot", "--from", "2025-03-10T09:00:00Z", "--to", "2025-03-10T13:00:00Z")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rows []string
	for _, l := range lines {
		if strings.HasPrefix(l, "2025-") || strings.HasPrefix(l, "total") {
			rows = append(rows, strings.Join(strings.Fields(l), " "))
		}
	}
	want := []string{
		"2025-03-10 09:00 0 0 -",
		"2025-03-10 10:00 12 5 rate_limited 4, insufficient_scope 1",
		"2025-03-10 11:00 0 0 -",
		"2025-03-10 12:00 3 0 -",
		"total 15 5 rate_limited 4, insufficient_scope 1",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("usage table rows:\n%s\nwant:\n%s\nwhole output:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"), out)
	}
	for _, s := range []string{"Usage of usage-bot (org acme, product 1337) by hour", "HOUR (UTC)", "TOP REFUSALS", "last request counted: 2025-03-10T10:42:00Z"} {
		if !strings.Contains(out, s) {
			t.Errorf("usage output lacks %q:\n%s", s, out)
		}
	}

	out = mustCLI(t, cfg, "usage", "usage-bot", "--granularity", "day", "--from", "2025-03-09T00:00:00Z", "--to", "2025-03-11T00:00:00Z")
	if !strings.Contains(out, "DAY (UTC)") || !strings.Contains(out, "\n2025-03-09 ") || !strings.Contains(out, "\n2025-03-10 ") || strings.Contains(out, "\n2025-03-11 ") {
		t.Errorf("usage --granularity day:\n%s", out)
	}

	var body struct {
		OK    bool
		Usage UsageReport
	}
	out = mustCLI(t, cfg, "usage", "usage-bot", "--granularity", "day", "--json")
	if err := json.Unmarshal([]byte(out), &body); err != nil || !body.OK || len(body.Usage.Series) != 30 || body.Usage.Username != "usage-bot" {
		t.Fatalf("usage --json: %v\n%s", err, out)
	}

	for _, tc := range []struct {
		args  []string
		field string
	}{
		{[]string{"usage", "usage-bot", "--granularity", "week"}, "granularity:"},
		{[]string{"usage", "usage-bot", "--from", "monday"}, "from:"},
		{[]string{"usage", "nobody"}, `no API user "nobody"`},
	} {
		if _, err := runCLI(t, cfg, tc.args...); err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.field)
		}
	}
}
