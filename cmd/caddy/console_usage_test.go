package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// TestConsoleUsageChart opens a user's page in Chromium, against
// Caddyfile.example in the real binary, after usage was flushed to its
// store as gateway nodes flush it: the page charts the last 24 hours by
// hour and the last 30 days by day, one bar per bucket, with the numbers
// the management API answers, an accessible name and a text summary; and
// a user with no usage says so.
func TestConsoleUsageChart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and drives a browser")
	}
	findChromium(t)
	e := startExample(t)
	for _, name := range []string{"chart-bot", "idle-bot"} {
		if st, body := e.api(t, "POST", "/v1/products/1337/team", map[string]any{"username": name, "friendly_name": "Fleet sync", "scopes": []string{"devices:list"}}); st != 200 {
			t.Fatalf("creating %s: %d %v", name, st, body)
		}
	}

	// Usage as the nodes flush it: an hour-by-hour pattern today, and a
	// few earlier days with refusals.
	db, err := store.OpenSQLite(filepath.Join(e.dataDir, "caddy", "api_users", "api_users.db"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	var counts []store.UsageCount
	for i := 0; i < 24; i += 2 {
		counts = append(counts, store.UsageCount{UserID: "chart-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: now.Add(-time.Duration(i) * time.Hour), Count: int64(40 + 7*(i%5)), LastAt: now.Add(-time.Duration(i) * time.Hour)})
		if i%6 == 0 {
			counts = append(counts, store.UsageCount{UserID: "chart-bot", Endpoint: "get-device", Outcome: "insufficient_scope", Hour: now.Add(-time.Duration(i) * time.Hour), Count: int64(3 + i)})
		}
	}
	for _, d := range []int{2, 3, 5, 8, 13, 21, 29} {
		counts = append(counts,
			store.UsageCount{UserID: "chart-bot", Endpoint: "list-devices", Outcome: "allowed", Hour: now.AddDate(0, 0, -d), Count: int64(300 + 40*d)},
			store.UsageCount{UserID: "chart-bot", Endpoint: "list-devices", Outcome: "rate_limited", Hour: now.AddDate(0, 0, -d), Count: int64(10 * (d % 4))})
	}
	if err := db.AddUsage(context.Background(), counts); err != nil {
		t.Fatal(err)
	}
	db.Close()

	b := newBrowser(t)
	b.do(chromedp.Navigate(e.admin + "/"))
	b.waitText("Orgs and products")
	b.open(e.admin + "/#/product/1337/users/chart-bot")
	b.waitText("Last 30 days")
	for _, tc := range []struct{ granularity, summary string }{
		{"hour", "in the last 24 hours"},
		{"day", "in the last 30 days"},
	} {
		_, body := e.api(t, "GET", "/v1/products/1337/team/chart-bot/usage?granularity="+tc.granularity, nil)
		usage := body["usage"].(map[string]any)
		series := usage["series"].([]any)
		totals := usage["totals"].(map[string]any)
		svg := fmt.Sprintf(`svg.usage-chart[data-granularity=%s]`, tc.granularity)
		// One bar per bucket, with the numbers of the API.
		if n := b.eval(`String(document.querySelectorAll("` + svg + ` g.bar").length)`); n != fmt.Sprint(len(series)) || (tc.granularity == "hour" && n != "24") || (tc.granularity == "day" && n != "30") {
			t.Errorf("%s chart: %s bars, the API has %d buckets", tc.granularity, n, len(series))
		}
		var want []string
		for _, s := range series {
			m := s.(map[string]any)
			want = append(want, fmt.Sprintf("%v/%v", m["allowed"], m["refused"]))
		}
		if got := b.eval(`[...document.querySelectorAll("` + svg + ` g.bar")].map(g => g.dataset.allowed + "/" + g.dataset.refused).join(" ")`); got != strings.Join(want, " ") {
			t.Errorf("%s bars: %s\nthe API: %s", tc.granularity, got, strings.Join(want, " "))
		}
		// A bucket with requests has a visible bar, one without has none.
		if got := b.eval(`[...document.querySelectorAll("` + svg + ` g.bar")].map(g => (Number(g.dataset.allowed) + Number(g.dataset.refused) > 0) === (g.querySelector("rect.allowed").getBBox().height + g.querySelector("rect.refused").getBBox().height > 0) ? "" : g.dataset.start).join("")`); got != "" {
			t.Errorf("%s chart: the bars of %s do not match their counts", tc.granularity, got)
		}
		// The chart is an image named by its title and described by its
		// summary, which the page also shows as text.
		name := b.eval(`(() => { const svg = document.querySelector("` + svg + `"); return svg.getAttribute("role") + " | " + svg.getAttribute("aria-labelledby").split(" ").map(id => document.getElementById(id).textContent).join(" | ") })()`)
		allowed, refused := fmt.Sprint(totals["allowed"]), fmt.Sprint(totals["refused"])
		if !strings.HasPrefix(name, "img | Last ") || !strings.Contains(name, tc.summary) {
			t.Errorf("%s chart's accessible name: %q", tc.granularity, name)
		}
		summary := b.eval(`document.querySelector("` + svg + `").closest("figure").querySelector(".usage-summary").textContent`)
		if !strings.HasSuffix(name, summary) || !strings.Contains(strings.ReplaceAll(summary, ",", ""), allowed+" requests allowed and "+refused+" requests refused") {
			t.Errorf("%s chart's summary %q; want it in the accessible name %q, with %s allowed and %s refused", tc.granularity, summary, name, allowed, refused)
		}
	}
	if got := b.eval(`document.querySelector("svg.usage-chart[data-granularity=day]").closest("figure").querySelector(".usage-summary").textContent`); !strings.Contains(got, "rate limited") || !strings.Contains(got, "insufficient scope") {
		t.Errorf("the 30-day summary names no refusal reasons: %q", got)
	}
	b.shot("user-usage")

	b.open(e.admin + "/#/product/1337/users/idle-bot")
	b.waitText("No requests in the last 24 hours.")
	b.waitText("No requests in the last 30 days.")
	if n := b.eval(`String(document.querySelectorAll("svg.usage-chart g.bar").length)`); n != "54" {
		t.Errorf("an idle user's charts have %s bars, want 24 + 30 empty ones", n)
	}
	if got := b.eval(`document.querySelector("section[aria-labelledby=usage-h]").innerText`); strings.Contains(got, "peak") {
		t.Errorf("an idle user's charts claim a peak:\n%s", got)
	}
	b.shot("user-usage-idle")
	t.Logf("screenshots: %s", b.shots)
}
