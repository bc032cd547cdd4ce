package caddymodule

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

type historyPage struct {
	History []HistoryView `json:"history"`
	Next    *string       `json:"next"`
}

func (p historyPage) actions() []string {
	var out []string
	for _, e := range p.History {
		out = append(out, e.Action)
	}
	return out
}

// TestUserHistory makes every kind of change to a user through the
// management API, behind basic_auth so the caller has a name, and reads
// the user's history back: newest first, who, what, before and after, no
// credential value anywhere, only where the user lives, and still there
// after the user is deleted.
func TestUserHistory(t *testing.T) {
	// bcrypt of "hunter2" at the lowest cost, as in TestAdminAudit.
	const hash = "$2a$04$Wk.G6Ht29Lqx9wxzwAOK1OLYa2DE3kN0lpl2kSi34R5qmSaRuPrG6"
	a := startAdmin(t, adminOptions{adminSite: "\tbasic_auth {\n\t\tops " + hash + "\n\t}\n"})
	auth := http.Header{"Authorization": {"Basic b3BzOmh1bnRlcjI="}} // ops:hunter2
	call := func(method, path string, body any) adminResult {
		t.Helper()
		r := a.call(method, path, body, auth)
		if r.Status != 200 {
			t.Fatalf("%s %s: %d %s", method, path, r.Status, r.Body)
		}
		return r
	}
	var created createdResponse
	if err := json.Unmarshal(call("POST", "/v1/products/1337/team", map[string]any{"username": "hist", "friendly_name": "Before", "scopes": []string{"devices:list"}}).Body, &created); err != nil {
		t.Fatal(err)
	}
	secrets := []string{created.Created.Tokens[0].Token, created.Created.Secret, created.Created.Keys[0].Value}
	var upd updatedResponse
	_ = json.Unmarshal(call("PUT", "/v1/products/1337/team/hist", map[string]any{"friendly_name": "After", "scopes": []string{"devices:get"}}).Body, &upd)
	secrets = append(secrets, upd.User.Tokens[0].Token)
	var tok struct{ Token string }
	_ = json.Unmarshal(call("POST", "/v1/products/1337/team/hist/token", nil).Body, &tok)
	var sec struct{ Secret string }
	_ = json.Unmarshal(call("POST", "/v1/products/1337/team/hist/secret", nil).Body, &sec)
	var key struct{ Key IssuedKey }
	_ = json.Unmarshal(call("POST", "/v1/products/1337/team/hist/keys", nil).Body, &key)
	secrets = append(secrets, tok.Token, sec.Secret, key.Key.Value)
	call("DELETE", "/v1/products/1337/team/hist/keys/"+created.Created.Keys[0].ID, nil)
	// A refused change leaves no entry.
	if r := a.call("PUT", "/v1/products/1337/team/hist", map[string]any{"scopes": []string{"no:such"}}, auth); r.Status != 400 {
		t.Fatalf("invalid update: %d", r.Status)
	}

	r := call("GET", "/v1/products/1337/team/hist/history", nil)
	var p historyPage
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	want := []string{"delete_key", "add_key", "regenerate_secret", "rotate_token", "update_user", "create_user"}
	if !slices.Equal(p.actions(), want) || p.Next != nil {
		t.Fatalf("history = %q (next %v), want %q", p.actions(), p.Next, want)
	}
	for _, e := range p.History {
		if e.By != "ops" || e.At == "" {
			t.Errorf("%s: by %q at %q, want by ops with a time", e.Action, e.By, e.At)
		}
	}
	var before, after UserView
	_ = json.Unmarshal(p.History[4].Before, &before)
	_ = json.Unmarshal(p.History[4].After, &after)
	if before.FriendlyName != "Before" || after.FriendlyName != "After" || !slices.Equal(after.Scopes, []string{"devices:get"}) || before.TokenID == after.TokenID {
		t.Errorf("update entry: before %+v, after %+v", before, after)
	}
	if string(p.History[5].Before) != "null" || p.History[0].Detail != created.Created.Keys[0].ID || p.History[1].Detail != key.Key.ID {
		t.Errorf("create entry before = %s, delete_key detail %q, add_key detail %q (added %s)", p.History[5].Before, p.History[0].Detail, p.History[1].Detail, key.Key.ID)
	}
	for _, s := range secrets {
		if s == "" || strings.Contains(string(r.Body), s) {
			t.Errorf("the history shows a credential value (or one was not issued): %q", s)
		}
	}

	// Paging, newest first.
	var p1, p2 historyPage
	_ = json.Unmarshal(call("GET", "/v1/products/1337/team/hist/history?limit=4", nil).Body, &p1)
	if p1.Next == nil {
		t.Fatal("no next page of the history")
	}
	_ = json.Unmarshal(call("GET", "/v1/products/1337/team/hist/history?limit=4&cursor="+*p1.Next, nil).Body, &p2)
	if got := append(p1.actions(), p2.actions()...); !slices.Equal(got, want) || p2.Next != nil {
		t.Errorf("paged history = %q, want %q", got, want)
	}

	// Not through another team's routes; bad parameters named.
	for _, path := range []string{"/v1/products/4242/team/hist/history", "/v1/orgs/acme/team/hist/history"} {
		if r := a.call("GET", path, nil, auth); r.Status != 404 {
			t.Errorf("GET %s: %d, want 404", path, r.Status)
		}
	}
	if r := a.call("GET", "/v1/products/1337/team/hist/history?limit=0", nil, auth); r.Status != 400 || !strings.HasPrefix(r.Error.Description, "limit:") {
		t.Errorf("limit=0: %d %s", r.Status, r.Body)
	}
	if r := a.call("GET", "/v1/products/1337/team/hist/history?cursor=zzz", nil, auth); r.Status != 400 || !strings.HasPrefix(r.Error.Description, "cursor:") {
		t.Errorf("cursor=zzz: %d %s", r.Status, r.Body)
	}

	// After a delete, the history is still there, where the user lived.
	call("DELETE", "/v1/products/1337/team/hist", nil)
	_ = json.Unmarshal(call("GET", "/v1/products/1337/team/hist/history?limit=1", nil).Body, &p)
	if len(p.History) != 1 || p.History[0].Action != "delete_user" || string(p.History[0].After) != "null" {
		t.Errorf("history after delete: %+v", p.History)
	}
	if r := a.call("GET", "/v1/products/4242/team/hist/history", nil, auth); r.Status != 404 {
		t.Errorf("a deleted user's history through another product: %d, want 404", r.Status)
	}
	if r := a.call("GET", "/v1/products/1337/team/never-was/history", nil, auth); r.Status != 404 {
		t.Errorf("history of a user that never was: %d, want 404", r.Status)
	}
}
