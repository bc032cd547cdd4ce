package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/apiusers/caddy-api-users/caddymodule"
)

// pluginModules are the modules the plugin registers in any build.
var pluginModules = []string{
	"api_users",
	"http.handlers.api_users",
	"http.handlers.api_users_admin",
	"caddy.logging.writers.api_users_audit",
}

// echoModule is the demo upstream, registered by this example binary only.
const echoModule = "http.handlers.api_users_echo"

// TestPluginAloneRegistersNoEcho builds and runs a program that imports
// only the caddymodule package, as a build with `xcaddy build --with` this
// module does, and checks it registers the plugin's modules and no demo
// upstream. The program is in this module, so it reuses the build cache
// of the tests; only its link is new.
func TestPluginAloneRegistersNoEcho(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a program")
	}
	out, err := exec.Command("go", "run", "./testdata/pluginonly").CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./testdata/pluginonly: %v\n%s", err, out)
	}
	registered := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		registered[id] = true
		if strings.Contains(id, "echo") {
			t.Errorf("a build of the plugin alone registers %s", id)
		}
	}
	for _, id := range pluginModules {
		if !registered[id] {
			t.Errorf("a build of the plugin alone lacks %s; it registers:\n%s", id, out)
		}
	}
}

// TestExampleBinaryRegistersEcho checks this binary (the plugin plus the
// demo upstream) has both, so Caddyfile.example runs with it.
func TestExampleBinaryRegistersEcho(t *testing.T) {
	for _, id := range append(pluginModules, echoModule) {
		if _, err := caddy.GetModule(id); err != nil {
			t.Errorf("the example binary lacks %s: %v", id, err)
		}
	}
}

// TestCaddyfileExampleAdapts checks the shipped example adapts to the app
// and handlers the README describes, with no global order line.
func TestCaddyfileExampleAdapts(t *testing.T) {
	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(example, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Apps struct {
			APIUsers caddymodule.App `json:"api_users"`
			HTTP     json.RawMessage
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	app := &cfg.Apps.APIUsers
	if len(app.Endpoints) < 7 || len(app.Orgs) != 2 {
		t.Fatalf("example has %d endpoints and %d orgs", len(app.Endpoints), len(app.Orgs))
	}
	scopes := map[string]bool{}
	for _, e := range app.Endpoints {
		scopes[e.Scope] = true
	}
	for _, s := range []string{"devices:list", "devices:get", "devices:update", "devices.function:call", "devices.variable:get", "events:get", "events:send"} {
		if !scopes[s] {
			t.Errorf("example catalog lacks scope %s", s)
		}
	}
	for _, h := range []string{`"handler":"api_users"`, `"handler":"reverse_proxy"`, `"handler":"api_users_echo"`} {
		if !strings.Contains(string(cfg.Apps.HTTP), h) {
			t.Errorf("example's http app lacks %s", h)
		}
	}
	if strings.Index(string(cfg.Apps.HTTP), `"handler":"api_users"`) > strings.Index(string(cfg.Apps.HTTP), `"handler":"reverse_proxy"`) {
		t.Error("api_users does not run before reverse_proxy")
	}
}
