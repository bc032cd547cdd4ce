package caddymodule

import (
	"strings"
	"testing"
)

func TestCheckStrictJSON(t *testing.T) {
	accepted := []string{
		`{}`,
		`{"friendly_name": "caf\u00e9 \ud83d\ude00 😀", "scopes": ["devices:list"]}`, // a surrogate pair is one character
		`{"friendly_name": "\ufffd is a character too", "description": "�"}`,        // U+FFFD sent on purpose
		`{"resource_constraints": {"device": ["a"], "Device": ["b"]}}`,              // map keys are data, not field names
		`{"rate_limit": {"requests": 1, "window": "1m"}, "scopes": []}`,
		`{"description": "a \\ud800 that is text, not an escape"}`,
		`{"scopes": [`, // not JSON: left for the decoder to describe
	}
	for _, body := range accepted {
		if err := checkStrictJSON([]byte(body), new(UserSpec)); err != nil {
			t.Errorf("checkStrictJSON(%s) = %v, want nil", body, err)
		}
	}
	refused := map[string]string{
		`{"scopes": [], "scopes": []}`:                                                            "scopes: appears twice",
		`{"rate_limit": {"window": "1m", "window": "2m"}}`:                                        "rate_limit.window: appears twice",
		`{"Scopes": []}`:                                                                          `Scopes: is not a field of this request: field names are case-sensitive; write "scopes"`,
		"{\"friendly_name\": \"\xc3\x28\"}":                                                       "friendly_name: is not valid UTF-8",
		"{\"friendly_name\xff\": \"x\"}":                                                          "body: is not valid UTF-8",
		`{"friendly_name": "\udfff"}`:                                                             "friendly_name: is not valid UTF-8",
		`{"friendly_name": "\ud800\u0041"}`:                                                       "friendly_name: is not valid UTF-8",
		`{"resource_constraints": {"device": ["\ud800"]}}`:                                        "resource_constraints.device: is not valid UTF-8",
		`{"allowed_proxied_users": ["alice", "\ud800x"]}`:                                         "allowed_proxied_users: is not valid UTF-8",
		`{"resource_constraints": {"d": ["a"], "d": ["b"]}}`:                                      "resource_constraints.d: appears twice",
		`{"rate_limit": {"requests": 1, "window": "1m"}, "description": "x", "rate_limit": null}`: "rate_limit: appears twice",
	}
	for body, want := range refused {
		err := checkStrictJSON([]byte(body), new(UserSpec))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("checkStrictJSON(%q) = %v, want %q", body, err, want)
		}
	}
}
