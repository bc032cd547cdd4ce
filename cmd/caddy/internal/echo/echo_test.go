package echo

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

// TestEchoShowsWhatItReceived checks the answer names the method, the path
// exactly as received (still encoded), the query, and every reported
// header, empty when absent.
func TestEchoShowsWhatItReceived(t *testing.T) {
	req := httptest.NewRequest("POST", "/v1/products/1337/devices/a%2Fb?x=1&y=2", nil)
	req.Header.Set("X-Api-User", "apiu-1")
	req.Header.Add("X-Acting-User", "one")
	req.Header.Add("X-Acting-User", "two")
	rec := httptest.NewRecorder()
	if err := (Handler{}).ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	var got Response
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("answer is not JSON: %v\n%s", err, rec.Body)
	}
	if got.Method != "POST" || got.Path != "/v1/products/1337/devices/a%2Fb" || got.Query != "x=1&y=2" {
		t.Errorf("saw %s %s ? %s", got.Method, got.Path, got.Query)
	}
	want := map[string]string{
		"Authorization": "", "X-Api-User": "apiu-1", "X-Api-User-Org": "", "X-Api-User-Product": "",
		"X-Proxied-User": "", "X-Acting-User": "one, two", "X-Http-Method-Override": "",
	}
	if len(got.Headers) != len(want) {
		t.Errorf("headers %v, want the keys of %v", got.Headers, want)
	}
	for h, w := range want {
		if v, ok := got.Headers[h]; !ok || v != w {
			t.Errorf("header %s = %q (present %v), want %q", h, v, ok, w)
		}
	}
}

// TestEchoDirective checks the directive adapts to the handler and refuses
// arguments.
func TestEchoDirective(t *testing.T) {
	adapt := func(site string) ([]byte, error) {
		out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":9000 {\n"+site+"\n}\n"), map[string]any{"filename": "Caddyfile"})
		return out, err
	}
	out, err := adapt("\tapi_users_echo")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `"handler":"api_users_echo"`) {
		t.Errorf("adapted config lacks the handler: %s", out)
	}
	if _, err := adapt("\tapi_users_echo loud"); err == nil || !strings.Contains(err.Error(), "takes no arguments") {
		t.Errorf("an argument: %v, want an error saying it takes none", err)
	}
}
