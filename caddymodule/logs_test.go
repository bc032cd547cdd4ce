package caddymodule

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apiusers/caddy-api-users/policy"
)

// TestAccessLogNamesTheAPIUser: Caddy's access log names the user through
// {http.auth.user.id} (user_id), and the gateway adds the user's org,
// product and proxied user.
func TestAccessLogNamesTheAPIUser(t *testing.T) {
	accessPath := filepath.Join(t.TempDir(), "access.log")
	g := startGateway(t, gatewayOptions{siteExtra: fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", accessPath)})
	prodID, prod := g.createUser(Tenant{Product: "my-product-v1"}, UserSpec{Scopes: strs("devices:list")})
	orgID, org := g.createUser(Tenant{Org: "acme"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true)})

	tests := []struct {
		name   string
		path   string
		header http.Header
		want   map[string]any // absent: the field must be absent
	}{
		{"product user", "/v1/products/1337/devices?n=1", bearer(prod.Token),
			map[string]any{"user_id": prodID, "api_user_org": "acme", "api_user_product": "1337"}},
		{"org user for a proxied user", "/v1/products/1337/devices?n=2", withHeader(bearer(org.Token), "X-Proxied-User", "alice"),
			map[string]any{"user_id": orgID, "api_user_org": "acme", "proxied_user": "alice"}},
		{"refused", "/v1/products/1337/devices?n=3", nil,
			map[string]any{"user_id": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.do("GET", tt.path, tt.header)
			entries := waitForLines(t, accessPath, 1, func(m map[string]any) bool {
				req, _ := m["request"].(map[string]any)
				return req != nil && req["uri"] == tt.path
			})
			if len(entries) != 1 {
				t.Fatalf("%d access log entries for %s, want 1", len(entries), tt.path)
			}
			e := entries[0]
			for _, f := range []string{"user_id", "api_user_org", "api_user_product", "proxied_user"} {
				want, wanted := tt.want[f]
				got, present := e[f]
				if wanted != present || got != want {
					t.Errorf("%s = %#v (present %v), want %#v (present %v)", f, got, present, want, wanted)
				}
			}
		})
	}
}

// credentialSession runs a session full of credentials, valid and not, in
// Bearer and Basic form, through the gateway and the management API, with
// every log the process writes captured at DEBUG level in dir. Every
// request carries a sentinel header that is no credential, so the logs
// are known to hold request headers. It returns the credentials and
// encodings that must never be logged, and the sentinel.
func credentialSession(t *testing.T, dir, globalExtra string) (secrets []string, sentinel string) {
	t.Helper()
	adminPort := freePort(t)
	logBlock := func(name string) string {
		return fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}", filepath.Join(dir, name))
	}
	g := startGateway(t, gatewayOptions{
		globalExtra:  fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel DEBUG\n\t}\n%s\n%s", filepath.Join(dir, "all.log"), auditLog(filepath.Join(dir, "audit.log")), globalExtra),
		gatewayBlock: "pass_through\n\t\tlockout off",
		siteExtra:    logBlock("access.log"),
		extraSites:   fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\n\tapi_users_admin\n}\n", adminPort, logBlock("admin-access.log")),
	})
	adminURL := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	sentinel = "sentinel-" + randomHex(t)
	requests := 0

	// secret adds a credential value, its random part, and for Basic
	// credentials their base64 form, to what must never be logged.
	secret := func(vs ...string) {
		for _, v := range vs {
			secrets = append(secrets, v)
			for _, p := range []string{policy.TokenPrefix, policy.SecretPrefix, policy.KeyPrefix} {
				if rest, ok := strings.CutPrefix(v, p); ok {
					secrets = append(secrets, rest)
				}
			}
		}
	}
	basicOf := func(id, key, sec string) http.Header {
		enc := base64.StdEncoding.EncodeToString([]byte(id + ":" + key + ":" + sec))
		secrets = append(secrets, enc)
		return http.Header{"Authorization": {"Basic " + enc}}
	}
	gateway := func(path string, h http.Header) int {
		h = h.Clone()
		if h == nil {
			h = http.Header{}
		}
		h.Set("X-Sentinel", sentinel)
		requests++
		return g.do("GET", path, h).Status
	}
	// misplaced sends a request that carries a credential outside
	// Authorization: no access log entry is expected for it.
	misplaced := func(path string, h http.Header) int {
		requests--
		return gateway(path, h)
	}
	// admin sends a management request and collects every credential its
	// response shows, whatever its shape.
	admin := func(method, path, body string) map[string]any {
		req, _ := http.NewRequest(method, adminURL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Sentinel", sentinel)
		resp, err := g.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, data)
		}
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
		secret(credentialsIn(v)...)
		m, _ := v.(map[string]any)
		return m
	}

	// Users made through the app, as the CLI does, and through the API.
	id, iss := g.createUser(Tenant{Product: "1337"}, UserSpec{Scopes: strs("devices:list"), AllowProxiedUsers: ptr(true)})
	secret(iss.Token, iss.Secret, iss.Key)
	admin("POST", "/v1/products/1337/team", `{"username": "leaky", "scopes": ["devices:list"]}`)
	created := admin("POST", "/v1/orgs/acme/team", `{"username": "leaky2", "scopes": ["devices:list"]}`)
	c, _ := created["created"].(map[string]any)
	tokens, _ := c["tokens"].([]any)
	keys, _ := c["keys"].([]any)
	if len(tokens) != 1 || len(keys) != 1 {
		t.Fatalf("create response lacks credentials: %v", created)
	}
	apiToken := tokens[0].(map[string]any)["token"].(string)
	apiSecret := c["secret"].(string)
	apiKey := keys[0].(map[string]any)["value"].(string)
	oldToken := apiToken

	devices := "/v1/products/1337/devices"
	statuses := []struct {
		got, want int
	}{
		{gateway(devices, bearer(iss.Token)), 200},
		{gateway(devices, withHeader(bearer(iss.Token), "X-Proxied-User", "alice")), 200},
		{gateway(devices, http.Header{"Authorization": {"bearer " + iss.Token}}), 200},
		{gateway(devices, basicOf(id, iss.Key, iss.Secret)), 200},
		{gateway(devices, bearer(apiToken)), 200},
		{gateway(devices, basicOf("leaky2", apiKey, apiSecret)), 200},
		{gateway(devices, basicOf("leaky2", apiKey, iss.Secret)), 401},      // another user's secret
		{gateway(devices, basicOf("nobody", apiKey, apiSecret)), 401},       // unknown user
		{gateway(devices, bearer(iss.Token[:len(iss.Token)-1])), 401},       // truncated: malformed
		{gateway(devices, bearer(iss.Token+"0")), 401},                      // too long: malformed
		{gateway("/v1/products/1337/..%2fdevices", bearer(iss.Token)), 400}, // refused before authentication
		{gateway(devices, withHeader(bearer(iss.Token), "X-Method-Override", "PUT")), 400},
		// Ours in another scheme or after a tab: decided, not passed through.
		{gateway(devices, http.Header{"Authorization": {"Token " + iss.Token}}), 401},
		{gateway(devices, http.Header{"Authorization": {"Bearer\t" + iss.Token}}), 401},
		// Credentials outside Authorization are refused, and the request
		// is left out of the access log, whose URI and headers hold them.
		{misplaced(devices+"?access_token="+iss.Token, bearer(iss.Token)), 400},
		{misplaced(devices+"?t="+iss.Secret, nil), 400},
		{misplaced(devices+"/"+iss.Token, bearer(iss.Token)), 400},
		{misplaced(devices, withHeader(bearer(iss.Token), "X-Api-Key", iss.Key)), 400},
	}
	// Rotate everything through the management API: the old values must
	// stay out of the logs as well as the new ones.
	admin("POST", "/v1/orgs/acme/team/leaky2/keys", `{}`)
	admin("POST", "/v1/orgs/acme/team/leaky2/secret", ``)
	admin("PUT", "/v1/orgs/acme/team/leaky2", `{"scopes": ["devices:list", "devices:get"]}`)
	secret(apiToken, apiSecret, apiKey)
	backend := "backend-secret-" + randomHex(t)
	secret(backend)
	statuses = append(statuses, []struct{ got, want int }{
		{gateway(devices, bearer(oldToken)), 401},                     // replaced by the update
		{gateway(devices, basicOf("leaky2", apiKey, apiSecret)), 401}, // secret regenerated
		{gateway(devices, bearer(backend)), 200},                      // the backend's own: passed through
		{gateway(devices, http.Header{"Authorization": {"Digest " + backend}}), 200},
	}...)
	for i, s := range statuses {
		if s.got != s.want {
			t.Errorf("request %d: status %d, want %d", i, s.got, s.want)
		}
	}

	// Access log entries are written after the response: wait for all.
	waitForLines(t, filepath.Join(dir, "access.log"), requests, func(m map[string]any) bool {
		b, _ := json.Marshal(m)
		return bytes.Contains(b, []byte(sentinel))
	})
	return secrets, sentinel
}

// credentialsIn finds every credential value in a decoded JSON document.
func credentialsIn(v any) []string {
	var out []string
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, "apiu_") {
			out = append(out, v)
		}
	case []any:
		for _, e := range v {
			out = append(out, credentialsIn(e)...)
		}
	case map[string]any:
		for _, e := range v {
			out = append(out, credentialsIn(e)...)
		}
	}
	return out
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// leaks reports which of secrets appear in any file of dir, and whether
// the sentinel appears in each of the files named in sentinelIn.
func leaks(t *testing.T, dir string, secrets []string, sentinel string, sentinelIn ...string) []string {
	t.Helper()
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	read := map[string][]byte{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		read[f.Name()] = data
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				found = append(found, fmt.Sprintf("%s holds %.20s...", f.Name(), s))
			}
		}
	}
	for _, name := range sentinelIn {
		if !bytes.Contains(read[name], []byte(sentinel)) {
			t.Fatalf("%s does not hold the sentinel request header, so it proves nothing about credentials", name)
		}
	}
	return found
}

// TestNoCredentialInAnyLog runs a session full of credentials, valid and
// invalid, through the gateway and the management API, with every log
// the process writes captured at DEBUG level, and finds none of them, nor
// their random parts, nor the base64 of Basic credentials, in any log.
func TestNoCredentialInAnyLog(t *testing.T) {
	dir := t.TempDir()
	secrets, sentinel := credentialSession(t, dir, "")
	if len(secrets) < 20 {
		t.Fatalf("only %d secrets: the session did not run", len(secrets))
	}
	// The sentinel, an ordinary request header, shows that these logs do
	// record request headers.
	for _, leak := range leaks(t, dir, secrets, sentinel, "all.log", "access.log", "admin-access.log") {
		t.Error(leak)
	}
	// The audit log searched holds both kinds of records: the gateway's
	// decisions and the management changes that issued the credentials.
	kinds := map[any]int{}
	for _, rec := range readJSONLines(t, filepath.Join(dir, "audit.log")) {
		kinds[rec["msg"]]++
	}
	if kinds["gateway decision"] < 15 || kinds["management change"] < 5 {
		t.Errorf("audit records by kind: %v; want at least 15 gateway decisions and 5 management changes", kinds)
	}
	for _, name := range []string{"all.log", "access.log", "admin-access.log", "audit.log"} {
		t.Logf("%s: %d entries searched for %d secrets", name, len(readJSONLines(t, filepath.Join(dir, name))), len(secrets))
	}
}

// TestCredentialLeakDetectorWorks runs the same session with Caddy told to
// log credentials, and expects the search to find them: the test above
// would fail if any log carried one.
func TestCredentialLeakDetectorWorks(t *testing.T) {
	dir := t.TempDir()
	secrets, sentinel := credentialSession(t, dir, "\tservers {\n\t\tlog_credentials\n\t}")
	found := leaks(t, dir, secrets, sentinel, "all.log", "access.log")
	if len(found) == 0 {
		t.Fatal("with log_credentials on, no credential was found in the logs: the search is broken")
	}
	t.Logf("with log_credentials on, the search finds %d leaks, such as: %s", len(found), found[0])
}
