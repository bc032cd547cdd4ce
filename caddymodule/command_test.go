package caddymodule

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// cliConfig writes a Caddyfile whose api_users store is in a temporary
// directory and returns its path.
func cliConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	cfg := fmt.Sprintf("{\n\tadmin off\n\tapi_users {\n\t\tstore sqlite %s\n%s\n\t}\n}\n", filepath.Join(dir, "api_users.db"), testCatalog)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs `caddy api-users <args>` in process, through the command
// tree the plugin registers, and returns what it printed.
func runCLI(t *testing.T, config string, args ...string) (string, error) {
	t.Helper()
	cmd, ok := caddycmd.Commands()["api-users"]
	if !ok {
		t.Fatal("the api-users command is not registered")
	}
	root := &cobra.Command{Use: cmd.Name, SilenceUsage: true, SilenceErrors: true}
	cmd.CobraFunc(root)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append(args, "--config", config, "--adapter", "caddyfile"))
	err := root.Execute()
	return out.String(), err
}

func mustCLI(t *testing.T, config string, args ...string) string {
	t.Helper()
	out, err := runCLI(t, config, args...)
	if err != nil {
		t.Fatalf("api-users %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestCLICreateListDelete walks a user's life from the shell: create, list,
// show, update, credential changes, retire, delete.
func TestCLICreateListDelete(t *testing.T) {
	cfg := cliConfig(t)

	var created struct {
		OK      bool
		Created createdUser
	}
	out := mustCLI(t, cfg, "create", "--org", "acme", "--username", "shell-bot", "--name", "Shell bot", "--scopes", "devices:list", "--json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || !created.OK {
		t.Fatalf("create --json: %v\n%s", err, out)
	}
	c := created.Created
	if c.Username != "shell-bot" || len(c.Tokens) != 1 || c.Secret == "" || len(c.Keys) != 1 {
		t.Fatalf("created: %+v", c)
	}

	out = mustCLI(t, cfg, "create", "--product", "my-product-v1", "--scopes", "devices:get")
	for _, want := range []string{"Created API user apiu-", "product 1337", "access token:  apiu_at_", "secret:        apiu_sk_", "curl -u '"} {
		if !strings.Contains(out, want) {
			t.Errorf("create output lacks %q:\n%s", want, out)
		}
	}

	var list struct{ Team []UserView }
	out = mustCLI(t, cfg, "list", "--org", "acme", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Team) != 2 {
		t.Fatalf("list --org acme --json: %v\n%s", err, out)
	}
	out = mustCLI(t, cfg, "list", "--product", "1337")
	if !strings.Contains(out, "USERNAME") || strings.Contains(out, "shell-bot") || !strings.Contains(out, "apiu-") {
		t.Errorf("list --product 1337:\n%s", out)
	}

	out = mustCLI(t, cfg, "show", "shell-bot")
	for _, want := range []string{"username:", "shell-bot", "Shell bot", "devices:list", "active", "key " + c.Keys[0].ID} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, c.Tokens[0].Token) || strings.Contains(out, c.Secret) {
		t.Errorf("show prints a credential value:\n%s", out)
	}

	// Update: a privilege change prints the new token, a rename does not.
	out = mustCLI(t, cfg, "update", "shell-bot", "--scopes", "devices:list,devices:get")
	if !strings.Contains(out, "access token:  apiu_at_") {
		t.Errorf("update with new scopes does not print the new token:\n%s", out)
	}
	out = mustCLI(t, cfg, "update", "shell-bot", "--name", "Renamed")
	if !strings.Contains(out, "unchanged") {
		t.Errorf("rename output:\n%s", out)
	}
	if _, err := runCLI(t, cfg, "update", "shell-bot", "--scopes", "devices:explode"); err == nil || !strings.Contains(err.Error(), "scopes:") {
		t.Errorf("update with an unknown scope: %v", err)
	}

	// Credentials.
	if out := mustCLI(t, cfg, "rotate", "shell-bot"); !strings.Contains(out, "access token:  apiu_at_") {
		t.Errorf("rotate:\n%s", out)
	}
	if out := mustCLI(t, cfg, "regenerate-secret", "shell-bot"); !strings.Contains(out, "secret:  apiu_sk_") {
		t.Errorf("regenerate-secret:\n%s", out)
	}
	var added struct{ Key IssuedKey }
	out = mustCLI(t, cfg, "add-key", "shell-bot", "--json")
	if err := json.Unmarshal([]byte(out), &added); err != nil || added.Key.ID == "" {
		t.Fatalf("add-key --json: %v\n%s", err, out)
	}
	if out := mustCLI(t, cfg, "delete-key", "shell-bot", c.Keys[0].ID); !strings.Contains(out, "1 keys remain") {
		t.Errorf("delete-key:\n%s", out)
	}

	// Retire and back.
	mustCLI(t, cfg, "retire", "shell-bot")
	if out := mustCLI(t, cfg, "show", "shell-bot"); !strings.Contains(out, "retired") {
		t.Errorf("show after retire:\n%s", out)
	}
	if out := mustCLI(t, cfg, "retire", "--undo", "shell-bot"); !strings.Contains(out, "access token:  apiu_at_") {
		t.Errorf("retire --undo does not print the new token:\n%s", out)
	}

	// Delete.
	if out := mustCLI(t, cfg, "delete", "shell-bot"); !strings.Contains(out, "deleted shell-bot") {
		t.Errorf("delete:\n%s", out)
	}
	out = mustCLI(t, cfg, "list", "--json")
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Team) != 1 || list.Team[0].Username == "shell-bot" {
		t.Fatalf("list after delete: %v\n%s", err, out)
	}
	if _, err := runCLI(t, cfg, "show", "shell-bot"); err == nil || !strings.Contains(err.Error(), `no API user "shell-bot"`) {
		t.Errorf("show after delete: %v", err)
	}
	if _, err := runCLI(t, cfg, "create", "--org", "acme", "--scopes", "devices:list,nope:nope"); err == nil || !strings.Contains(err.Error(), "scopes:") {
		t.Errorf("create with an unknown scope: %v", err)
	}
}

// TestCLIRolesAndCatalog manages roles, orgs and products from the shell.
func TestCLIRolesAndCatalog(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "role", "put", "caller", "--scopes", "devices.function:call", "--description", "calls functions")
	out := mustCLI(t, cfg, "role", "list")
	for _, want := range []string{"device-reader", "config", "caller", "store", "calls functions"} {
		if !strings.Contains(out, want) {
			t.Errorf("role list lacks %q:\n%s", want, out)
		}
	}
	if _, err := runCLI(t, cfg, "role", "put", "device-reader", "--scopes", "devices:list"); err == nil || !strings.Contains(err.Error(), "Caddyfile") {
		t.Errorf("changing a config role: %v", err)
	}
	mustCLI(t, cfg, "create", "--org", "acme", "--username", "caller-bot", "--roles", "caller")
	if _, err := runCLI(t, cfg, "role", "delete", "caller"); err == nil || !strings.Contains(err.Error(), "caller-bot") {
		t.Errorf("deleting a role in use: %v", err)
	}
	mustCLI(t, cfg, "delete", "caller-bot")
	mustCLI(t, cfg, "role", "delete", "caller")

	mustCLI(t, cfg, "catalog", "org", "put", "initech", "--slug", "initech-corp")
	mustCLI(t, cfg, "catalog", "product", "put", "initech", "77", "--slug", "tps-reports")
	out = mustCLI(t, cfg, "catalog", "org", "list")
	if !strings.Contains(out, "initech-corp") || !strings.Contains(out, "77 (tps-reports)") {
		t.Errorf("org list:\n%s", out)
	}
	var products struct{ Products []ProductView }
	out = mustCLI(t, cfg, "catalog", "product", "list", "initech", "--json")
	if err := json.Unmarshal([]byte(out), &products); err != nil || len(products.Products) != 1 || products.Products[0].Slug != "tps-reports" {
		t.Errorf("product list --json: %v\n%s", err, out)
	}
	// A user of the new product can be created at once by the next command.
	mustCLI(t, cfg, "create", "--product", "tps-reports", "--username", "tps-bot", "--scopes", "devices:list")
	if _, err := runCLI(t, cfg, "catalog", "product", "delete", "initech", "77"); err == nil {
		t.Error("deleting a product with users succeeded")
	}
	mustCLI(t, cfg, "delete", "tps-bot")
	mustCLI(t, cfg, "catalog", "product", "delete", "initech", "77")
	mustCLI(t, cfg, "catalog", "org", "delete", "initech")
	if out := mustCLI(t, cfg, "catalog", "org", "list"); strings.Contains(out, "initech") {
		t.Errorf("org list after delete:\n%s", out)
	}
	if out := mustCLI(t, cfg, "catalog", "endpoints"); !strings.Contains(out, "call-function") {
		t.Errorf("catalog endpoints:\n%s", out)
	}
}

// TestCLIRateLimit: --rate-limit sets, shows and clears a user's own rate
// limit; a malformed one is an error naming the flag and changes nothing.
func TestCLIRateLimit(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "create", "--org", "acme", "--username", "limited-bot", "--scopes", "devices:list", "--rate-limit", "600/1m")
	if out := mustCLI(t, cfg, "show", "limited-bot"); !strings.Contains(out, "600 per 1m0s") {
		t.Fatalf("show lacks the rate limit:\n%s", out)
	}
	for _, bad := range []string{"600", "x/1m", "600/10ms", "-5/1m"} {
		_, err := runCLI(t, cfg, "update", "limited-bot", "--name", "changed", "--rate-limit", bad)
		if err == nil || !strings.Contains(err.Error(), "rate") {
			t.Fatalf("--rate-limit %q: %v, want an error about the rate limit", bad, err)
		}
	}
	var shown struct{ User UserView }
	out := mustCLI(t, cfg, "show", "limited-bot", "--json")
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	if shown.User.FriendlyName == "changed" || shown.User.RateLimit == nil || shown.User.RateLimit.Requests != 600 {
		t.Fatalf("a refused update changed the user: %+v", shown.User)
	}
	mustCLI(t, cfg, "update", "limited-bot", "--rate-limit", "")
	if out := mustCLI(t, cfg, "show", "limited-bot"); !strings.Contains(out, "rate limit:") || !strings.Contains(out, "the gateway's") {
		t.Fatalf("after clearing, show says:\n%s", out)
	}
}

// TestCLIQuotaAndAllowedIPs: --quota and --allowed-ips set, show and
// clear; changing the allow-list prints a new token; a malformed value is
// an error naming what is wrong and changes nothing.
func TestCLIQuotaAndAllowedIPs(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "create", "--org", "acme", "--username", "budget-bot", "--scopes", "devices:list", "--quota", "1000/month", "--allowed-ips", "192.0.2.0/24,2001:db8::1")
	out := mustCLI(t, cfg, "show", "budget-bot")
	if !strings.Contains(out, "1000 per month (UTC)") || !strings.Contains(out, "192.0.2.0/24, 2001:db8::1/128") {
		t.Fatalf("show lacks the quota or the allowed IPs:\n%s", out)
	}
	for bad, about := range map[string]string{"--quota=1000": "--quota", "--quota=1000/week": "quota.period", "--allowed-ips=10.0.0.1/8": "allowed_ips", "--allowed-ips=nowhere": "allowed_ips"} {
		if _, err := runCLI(t, cfg, "update", "budget-bot", "--name", "changed", bad); err == nil || !strings.Contains(err.Error(), about) {
			t.Errorf("%s: %v, want an error naming %s", bad, err, about)
		}
	}
	if out := mustCLI(t, cfg, "show", "budget-bot"); strings.Contains(out, "changed") {
		t.Fatalf("a refused update changed the user:\n%s", out)
	}
	if out := mustCLI(t, cfg, "update", "budget-bot", "--allowed-ips", "192.0.2.0/25"); !strings.Contains(out, "apiu_at_") {
		t.Errorf("narrowing the allowed IPs printed no new token:\n%s", out)
	}
	mustCLI(t, cfg, "update", "budget-bot", "--quota", "", "--allowed-ips", "")
	out = mustCLI(t, cfg, "show", "budget-bot")
	if !strings.Contains(out, "anywhere") || strings.Contains(out, "per month") {
		t.Fatalf("after clearing, show says:\n%s", out)
	}
}

// TestCLICheck: check passes on a healthy store and fails, naming the
// damage, on a damaged one.
func TestCLICheck(t *testing.T) {
	cfg := cliConfig(t)
	mustCLI(t, cfg, "create", "--org", "acme", "--scopes", "devices:list")
	if out := mustCLI(t, cfg, "check"); !strings.Contains(out, "store OK: 1 API users") {
		t.Fatalf("check on a healthy store:\n%s", out)
	}
	// A product whose org vanished, as a hand edit with foreign keys off
	// would leave it.
	db, err := sql.Open("sqlite", filepath.Join(filepath.Dir(cfg), "api_users.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, stmt := range []string{`PRAGMA foreign_keys = OFF`, `INSERT INTO products (id, org) VALUES (77, 'vanished')`} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	_, err = runCLI(t, cfg, "check")
	if err == nil || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "foreign key") {
		t.Fatalf("check on a damaged store: %v, want an error naming the foreign key damage", err)
	}
}

// TestCLIWritesToTerminal names the log writers a quiet command keeps off
// the terminal: stdout and stderr, and no writer at all, which is stderr.
func TestCLIWritesToTerminal(t *testing.T) {
	for _, tt := range []struct {
		writer string
		want   bool
	}{
		{"", true},
		{`{"output":"stderr"}`, true},
		{`{"output":"stdout"}`, true},
		{`{"output":"file","filename":"/var/log/audit.log"}`, false},
		{`{"output":"api_users_audit","filename":"/var/log/audit.log"}`, false},
		{`{"output":"net","address":"localhost:9999"}`, false},
		{`{"output":"discard"}`, false},
	} {
		if got := writesToTerminal(json.RawMessage(tt.writer)); got != tt.want {
			t.Errorf("writesToTerminal(%s) = %v, want %v", tt.writer, got, tt.want)
		}
	}
}
