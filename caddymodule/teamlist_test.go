package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// teamPage is the body of a list route.
type teamPage struct {
	Team []UserView `json:"team"`
	Next *string    `json:"next"`
}

func (p teamPage) names() []string {
	var out []string
	for _, u := range p.Team {
		out = append(out, u.Username)
	}
	return out
}

// TestListTeamQueries drives GET .../team through a real Caddy with every
// parameter: limit, cursor, q, state and sort, and the refusals of bad
// values, each naming its parameter.
func TestListTeamQueries(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	mk := func(prefix, name string, spec map[string]any) {
		t.Helper()
		spec["username"] = name
		a.createVia(prefix, spec)
	}
	mk("/v1/products/1337", "carol", map[string]any{"friendly_name": "Inventory Sync"})
	mk("/v1/products/1337", "alice", map[string]any{"friendly_name": "billing export"})
	mk("/v1/products/1337", "bob", map[string]any{"friendly_name": "Zeta", "retired": true})
	mk("/v1/products/1337", "dave", map[string]any{"friendly_name": "sync later", "expires_at": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})
	mk("/v1/products/1337", "erin", map[string]any{"friendly_name": "alpha"})
	mk("/v1/products/4242", "frank", map[string]any{"friendly_name": "other product sync"})
	mk("/v1/orgs/acme", "grace", map[string]any{"friendly_name": "org-level sync"})

	list := func(prefix string, q url.Values) teamPage {
		t.Helper()
		var p teamPage
		a.must("GET", prefix+"/team?"+q.Encode(), nil, &p)
		return p
	}
	tests := []struct {
		name   string
		prefix string
		query  url.Values
		want   []string
		more   bool
	}{
		{"default: all of one product, by username", "/v1/products/1337", nil, []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"slug names the same product", "/v1/products/my-product-v1", nil, []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"org route: org-level users only", "/v1/orgs/acme", nil, []string{"grace"}, false},
		{"limit", "/v1/products/1337", url.Values{"limit": {"2"}}, []string{"alice", "bob"}, true},
		{"limit equal to the team: no next", "/v1/products/1337", url.Values{"limit": {"5"}}, []string{"alice", "bob", "carol", "dave", "erin"}, false},
		{"q in friendly name, any case", "/v1/products/1337", url.Values{"q": {"SYNC"}}, []string{"carol", "dave"}, false},
		{"q in username", "/v1/products/1337", url.Values{"q": {"ri"}}, []string{"erin"}, false},
		{"q with LIKE wildcards matches literally", "/v1/products/1337", url.Values{"q": {"%_"}}, nil, false},
		{"state active", "/v1/products/1337", url.Values{"state": {"active"}}, []string{"alice", "carol", "erin"}, false},
		{"state retired", "/v1/products/1337", url.Values{"state": {"retired"}}, []string{"bob"}, false},
		{"state expired", "/v1/products/1337", url.Values{"state": {"expired"}}, []string{"dave"}, false},
		{"state idle_expired", "/v1/products/1337", url.Values{"state": {"idle_expired"}}, nil, false},
		{"sort by name", "/v1/products/1337", url.Values{"sort": {"name"}}, []string{"carol", "bob", "erin", "alice", "dave"}, false},
		{"sort by username, descending", "/v1/products/1337", url.Values{"sort": {"-username"}}, []string{"erin", "dave", "carol", "bob", "alice"}, false},
		{"sort by created, newest first", "/v1/products/1337", url.Values{"sort": {"-created"}}, []string{"erin", "dave", "bob", "alice", "carol"}, false},
		{"state and q and limit", "/v1/products/1337", url.Values{"state": {"active"}, "q": {"a"}, "limit": {"1"}}, []string{"alice"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := list(tt.prefix, tt.query)
			if !slices.Equal(p.names(), tt.want) {
				t.Errorf("team = %q, want %q", p.names(), tt.want)
			}
			if (p.Next != nil) != tt.more {
				t.Errorf("next = %v, want a next page: %v", p.Next, tt.more)
			}
		})
	}

	// Following next visits every user once, in order, for every sort.
	for _, sort := range []string{"username", "name", "-created", "last_used"} {
		var seen []string
		q := url.Values{"limit": {"2"}, "sort": {sort}}
		for range 10 {
			p := list("/v1/products/1337", q)
			seen = append(seen, p.names()...)
			if p.Next == nil {
				break
			}
			q.Set("cursor", *p.Next)
		}
		all := list("/v1/products/1337", url.Values{"sort": {sort}})
		if !slices.Equal(seen, all.names()) {
			t.Errorf("sort %s: pages visited %q, want %q", sort, seen, all.names())
		}
	}

	first := list("/v1/products/1337", url.Values{"limit": {"2"}})
	refusals := []struct {
		query url.Values
		field string
	}{
		{url.Values{"limit": {"0"}}, "limit"},
		{url.Values{"limit": {"1001"}}, "limit"},
		{url.Values{"limit": {"ten"}}, "limit"},
		{url.Values{"limit": {"1", "2"}}, "limit"},
		{url.Values{"cursor": {"not-a-cursor"}}, "cursor"},
		{url.Values{"cursor": {*first.Next}, "sort": {"name"}}, "cursor"},
		{url.Values{"state": {"sleeping"}}, "state"},
		{url.Values{"sort": {"height"}}, "sort"},
		{url.Values{"q": {strings.Repeat("x", 201)}}, "q"},
		{url.Values{"q": {"a\x00b"}}, "q"},
		{url.Values{"page": {"2"}}, "page"},
	}
	for _, r := range refusals {
		res := a.call("GET", "/v1/products/1337/team?"+r.query.Encode(), nil)
		if res.Status != 400 || !strings.HasPrefix(res.Error.Description, r.field+":") {
			t.Errorf("GET ?%s: %d %q, want 400 naming %s", r.query.Encode(), res.Status, res.Error.Description, r.field)
		}
	}

	// Roles, orgs and products page the same way.
	var orgs struct {
		Orgs []OrgView `json:"orgs"`
		Next *string   `json:"next"`
	}
	a.must("GET", "/v1/orgs?limit=1", nil, &orgs)
	if len(orgs.Orgs) != 1 || orgs.Next == nil {
		t.Fatalf("GET /v1/orgs?limit=1: %+v, want one org and a next cursor", orgs)
	}
	firstOrg := orgs.Orgs[0].ID
	a.must("GET", "/v1/orgs?limit=1&cursor="+url.QueryEscape(*orgs.Next), nil, &orgs)
	if len(orgs.Orgs) != 1 || orgs.Orgs[0].ID == firstOrg || orgs.Next != nil {
		t.Errorf("second page of orgs: %+v, want the other org and no next", orgs)
	}
	if r := a.call("GET", "/v1/roles?sort=name", nil); r.Status != 400 || !strings.HasPrefix(r.Error.Description, "sort:") {
		t.Errorf("GET /v1/roles?sort=name: %d %s, want 400 naming sort", r.Status, r.Body)
	}
}

// TestListTeamConcurrentInserts pages through a product's team while other
// goroutines create users in it: every user that existed before the first
// page is seen exactly once, no user is seen twice, and the pages stay in
// order.
func TestListTeamConcurrentInserts(t *testing.T) {
	a := startAdmin(t, adminOptions{})
	ctx := context.Background()
	var before []string
	for i := range 60 {
		id := fmt.Sprintf("u%03d", i*2) // even numbers now, odd ones during the listing
		if _, _, err := a.app.CreateUser(ctx, Tenant{Product: "1337"}, &UserSpec{Username: &id}); err != nil {
			t.Fatal(err)
		}
		before = append(before, id)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var inserted sync.Map
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 3 {
				select {
				case <-stop:
					return
				default:
				}
				// Odd numbers in a scattered order, so some land before
				// the reader's position and some after.
				id := fmt.Sprintf("u%03d", (i*37%60)*2+1)
				if i >= 60 {
					id = fmt.Sprintf("z%04d", i) // after every existing user
				}
				if _, _, err := a.app.CreateUser(ctx, Tenant{Product: "1337"}, &UserSpec{Username: &id}); err != nil {
					t.Error(err)
					return
				}
				inserted.Store(id, true)
			}
		}()
	}

	var seen []string
	q := url.Values{"limit": {"7"}}
	for pages := 0; ; pages++ {
		if pages > 200 {
			t.Fatal("paging did not end")
		}
		var p teamPage
		a.must("GET", "/v1/products/1337/team?"+q.Encode(), nil, &p)
		seen = append(seen, p.names()...)
		if p.Next == nil || pages == 30 {
			break
		}
		q.Set("cursor", *p.Next)
		time.Sleep(2 * time.Millisecond) // let the writers in between pages
	}
	close(stop)
	wg.Wait()

	count := map[string]int{}
	for _, id := range seen {
		count[id]++
		if count[id] == 2 {
			t.Errorf("user %s listed twice", id)
		}
	}
	for _, id := range before {
		if count[id] != 1 {
			t.Errorf("user %s, there before the first page, listed %d times", id, count[id])
		}
	}
	if !slices.IsSorted(seen) {
		t.Errorf("pages are not in username order: %q", seen)
	}
	n := 0
	inserted.Range(func(any, any) bool { n++; return true })
	if n == 0 {
		t.Error("no user was inserted while paging: the test proved nothing")
	}
	t.Logf("listed %d users in pages of 7 while %d were inserted (%d of them after the reader's position)", len(seen), n, len(seen)-len(before))
}

// TestCLIListPagesThrough lists more users than one page holds with the
// CLI, as text and as JSON, and filters them.
func TestCLIListPagesThrough(t *testing.T) {
	cfg := cliConfig(t)
	for i := range 7 {
		mustCLI(t, cfg, "create", "--product", "1337", "--name", fmt.Sprintf("worker %d", i))
	}
	mustCLI(t, cfg, "create", "--product", "4242", "--name", "elsewhere")
	out := mustCLI(t, cfg, "list", "--product", "1337", "--page-size", "2", "--json")
	var body struct {
		OK   bool       `json:"ok"`
		Team []UserView `json:"team"`
	}
	if err := json.Unmarshal([]byte(out), &body); err != nil {
		t.Fatalf("list --json is not JSON: %v\n%s", err, out)
	}
	if !body.OK || len(body.Team) != 7 {
		t.Fatalf("list --page-size 2 --json: ok %v, %d users, want 7", body.OK, len(body.Team))
	}
	if text := mustCLI(t, cfg, "list", "--org", "acme", "--page-size", "3"); strings.Count(text, "\n") != 1+8 || !strings.Contains(text, "4242") {
		t.Errorf("list --org acme --page-size 3 printed:\n%s\nwant a header and the 8 users of the org", text)
	}
	if text := mustCLI(t, cfg, "list", "--product", "1337", "--q", "WORKER 3"); strings.Count(text, "\n") != 2 {
		t.Errorf("list --q \"WORKER 3\" printed:\n%s\nwant one user", text)
	}
	if _, err := runCLI(t, cfg, "list", "--state", "sleeping"); err == nil || !strings.Contains(err.Error(), "state") {
		t.Errorf("list --state sleeping: %v, want an error naming state", err)
	}
}
