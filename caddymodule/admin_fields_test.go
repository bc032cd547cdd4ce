package caddymodule

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestAdminFieldValidation: text, times and nested objects that a store
// could not keep, or would keep differently on SQLite and PostgreSQL, are a
// 400 naming the field, and change nothing.
func TestAdminFieldValidation(t *testing.T) {
	a := startAdmin(t, adminOptions{gatewayOptions: gatewayOptions{gatewayBlock: "lockout off"}})
	a.createVia("/v1/orgs/acme", map[string]any{"username": "fields", "scopes": []string{"devices:list"}, "friendly_name": "before"})
	base := "/v1/orgs/acme/team/fields"
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"NUL in friendly_name", map[string]any{"friendly_name": "a\u0000b"}, "friendly_name"},
		{"line break in friendly_name", map[string]any{"friendly_name": "a\nb"}, "friendly_name"},
		{"NUL in description", map[string]any{"description": "a\u0000b"}, "description"},
		{"escape sequence in description", map[string]any{"description": "a\u001b[31mb"}, "description"},
		{"friendly_name of 201 characters", map[string]any{"friendly_name": strings.Repeat("é", 201)}, "friendly_name"},
		{"NUL in a constraint value", map[string]any{"resource_constraints": map[string][]string{"device": {"a\u0000b"}}}, "resource_constraints"},
		{"empty constraint value", map[string]any{"resource_constraints": map[string][]string{"device": {""}}}, "resource_constraints"},
		{"expiry after 2261", map[string]any{"expires_at": "2300-01-01T00:00:00Z"}, "expires_at"},
		{"expiry before 1970", map[string]any{"expires_at": "1600-01-01T00:00:00Z"}, "expires_at"},
		{"expiry at the zero time", map[string]any{"expires_at": "0001-01-01T00:00:00Z"}, "expires_at"},
		{"unknown field of rate_limit", map[string]any{"rate_limit": map[string]any{"requests": 5, "window": "1m", "burst": 3}}, "rate_limit.burst"},
		{"rate_limit as a string", map[string]any{"rate_limit": "600/1m"}, "rate_limit"},
		{"rate_limit.requests as a string", map[string]any{"rate_limit": map[string]any{"requests": "5", "window": "1m"}}, "rate_limit.requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := a.call("PUT", base, tc.body)
			if r.Status != 400 || !strings.HasPrefix(r.Error.Description, tc.field+":") {
				t.Fatalf("%d %q, want 400 naming %s", r.Status, r.Error.Description, tc.field)
			}
			if strings.Contains(r.Error.Description, "caddymodule.") {
				t.Errorf("the message names a Go type: %q", r.Error.Description)
			}
		})
	}
	var got struct{ User UserView }
	a.must("GET", base, nil, &got)
	if got.User.FriendlyName != "before" || got.User.ExpiresAt != nil || got.User.RateLimit != nil || len(got.User.ResourceConstraints) != 0 {
		t.Fatalf("refused updates changed the user: %+v", got.User)
	}

	// What is valid is kept: 200 characters of any script, line breaks in
	// a description, an expiry cut to the microsecond the stores keep.
	long := strings.Repeat("日", 200)
	r := a.call("PUT", base, map[string]any{"friendly_name": long, "description": "line one\nline two\ttabbed", "expires_at": "2030-01-01T00:00:00.0000005Z"})
	if r.Status != 200 {
		t.Fatalf("valid update: %d %s", r.Status, r.Body)
	}
	var up updatedResponse
	if err := json.Unmarshal(r.Body, &up); err != nil {
		t.Fatal(err)
	}
	if up.User.FriendlyName != long || up.User.ExpiresAt == nil || up.User.ExpiresAt.Nanosecond() != 0 {
		t.Fatalf("valid update stored %q, expiry %v", up.User.FriendlyName, up.User.ExpiresAt)
	}
	// Sending the same expiry again grants nothing: the token stays.
	r = a.call("PUT", base, map[string]any{"expires_at": "2030-01-01T00:00:00.0000005Z"})
	if err := json.Unmarshal(r.Body, &up); err != nil || r.Status != 200 || up.TokenReplaced {
		t.Fatalf("the same expiry again: %d, token_replaced %v", r.Status, up.TokenReplaced)
	}

	// A route that takes no fields says so.
	r = a.call("POST", base+"/token", map[string]any{"x": 1})
	if r.Status != 400 || !strings.Contains(r.Error.Description, "takes none") {
		t.Fatalf("POST token with a field: %d %q", r.Status, r.Error.Description)
	}
	// A stale If-Match on GET is 412 too.
	etag := a.call("GET", base, nil).Header.Get("ETag")
	if r = a.call("GET", base, nil, http.Header{"If-Match": {`"0.stale"`}}); r.Status != 412 {
		t.Fatalf("GET with a stale If-Match: %d, want 412", r.Status)
	}
	if r = a.call("GET", base, nil, http.Header{"If-Match": {etag}}); r.Status != 200 {
		t.Fatalf("GET with the current If-Match: %d", r.Status)
	}
}
