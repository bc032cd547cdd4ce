package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestAdminConditionalRequests: every response about one API user carries
// its entity tag; a change sent with If-Match happens only if the user is
// unchanged since, and otherwise is refused with 412 and changes nothing.
func TestAdminConditionalRequests(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	base := "/v1/orgs/acme/team/cond"
	ifMatch := func(tag string) http.Header { return http.Header{"If-Match": {tag}} }
	friendlyName := func() string {
		r := a.call("GET", base, nil)
		var got struct{ User UserView }
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		return got.User.FriendlyName
	}

	created := a.call("POST", "/v1/orgs/acme/team", map[string]any{"username": "cond", "scopes": []string{"devices:list"}})
	e1 := created.Header.Get("ETag")
	if created.Status != 200 || !strings.HasPrefix(e1, `"`) || !strings.HasSuffix(e1, `"`) || len(e1) < 3 {
		t.Fatalf("create: %d, ETag %q; want 200 and a quoted entity tag", created.Status, e1)
	}
	if got := a.call("GET", base, nil).Header.Get("ETag"); got != e1 {
		t.Fatalf("GET ETag %q, want the create's %q", got, e1)
	}

	r := a.call("PUT", base, map[string]any{"friendly_name": "first"}, ifMatch(e1))
	e2 := r.Header.Get("ETag")
	if r.Status != 200 || e2 == "" || e2 == e1 {
		t.Fatalf("PUT If-Match current: %d, ETag %q (was %q); want 200 and a new tag", r.Status, e2, e1)
	}
	for _, stale := range []string{e1, "W/" + e2, `"nonsense"`, ""} {
		r = a.call("PUT", base, map[string]any{"friendly_name": "lost", "scopes": []string{"devices:get"}}, ifMatch(stale))
		if r.Status != 412 || r.Error.Error != "precondition_failed" {
			t.Fatalf("PUT If-Match %q: %d %q, want 412 precondition_failed", stale, r.Status, r.Error.Error)
		}
	}
	if name := friendlyName(); name != "first" {
		t.Fatalf("a refused conditional PUT changed friendly_name to %q", name)
	}
	if got := a.call("GET", base, nil).Header.Get("ETag"); got != e2 {
		t.Fatalf("a refused conditional PUT changed the entity tag to %q", got)
	}
	if r = a.call("PUT", base, map[string]any{"friendly_name": "second"}, ifMatch(`"other", `+e2)); r.Status != 200 {
		t.Fatalf("PUT with the current tag in a list: %d", r.Status)
	}
	e3 := r.Header.Get("ETag")
	if r = a.call("PUT", base, map[string]any{"friendly_name": "third"}, ifMatch("*")); r.Status != 200 {
		t.Fatalf("PUT If-Match *: %d", r.Status)
	}
	e4 := r.Header.Get("ETag")

	// Credential routes are conditional too, and move the tag.
	if r = a.call("POST", base+"/keys", nil, ifMatch(e3)); r.Status != 412 {
		t.Fatalf("add key with a stale tag: %d, want 412", r.Status)
	}
	if r = a.call("POST", base+"/keys", nil, ifMatch(e4)); r.Status != 200 || r.Header.Get("ETag") == e4 {
		t.Fatalf("add key with the current tag: %d, ETag %q", r.Status, r.Header.Get("ETag"))
	}
	e5 := r.Header.Get("ETag")
	if r = a.call("POST", base+"/token", nil, ifMatch(e4)); r.Status != 412 {
		t.Fatalf("rotate with a stale tag: %d, want 412", r.Status)
	}

	// Two writers that read the same version: exactly one wins.
	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range writers {
		wg.Go(func() {
			r := a.call("PUT", base, map[string]any{"friendly_name": strings.Repeat("w", i+1)}, ifMatch(e5))
			mu.Lock()
			statuses[r.Status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[200] != 1 || statuses[412] != writers-1 {
		t.Fatalf("%d writers with one tag: %v; want exactly one 200 and the rest 412", writers, statuses)
	}

	// Delete: a stale tag keeps the user.
	if r = a.call("DELETE", base, nil, ifMatch(e5)); r.Status != 412 {
		t.Fatalf("delete with a stale tag: %d, want 412", r.Status)
	}
	current := a.call("GET", base, nil).Header.Get("ETag")
	if r = a.call("DELETE", base, nil, ifMatch(current)); r.Status != 200 {
		t.Fatalf("delete with the current tag: %d", r.Status)
	}
	if r = a.call("GET", base, nil); r.Status != 404 {
		t.Fatalf("after the conditional delete: GET %d, want 404", r.Status)
	}

	// Where there is no entity tag, If-Match is refused, and nothing done.
	r = a.call("PUT", "/v1/roles/cond-role", map[string]any{"scopes": []string{"devices:list"}}, ifMatch("*"))
	if r.Status != 400 || !strings.Contains(r.Error.Description, "If-Match") {
		t.Fatalf("PUT role with If-Match: %d %q, want 400 naming If-Match", r.Status, r.Error.Description)
	}
	if r = a.call("GET", "/v1/roles/cond-role", nil); r.Status != 404 {
		t.Fatalf("the refused role PUT created the role: GET %d", r.Status)
	}
}
