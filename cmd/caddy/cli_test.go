package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIQuiet runs `caddy api-users` in the real binary, where Caddy's
// logs write to the process's stderr, and checks a command prints what it
// was asked for: no log line and no audit record on the terminal, unless
// --verbose; while the audit record still goes where the config's logging
// sends it.
func TestCLIQuiet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCaddy(t)
	dir := t.TempDir()
	env := append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)
	auditPath := filepath.Join(dir, "audit.log")
	catalog := `
		org acme {
			product 1337 my-product-v1
		}
		endpoint list-devices GET /v1/products/{product}/devices devices:list`
	write := func(name, logging string) string {
		path := filepath.Join(dir, name)
		cfg := fmt.Sprintf("{\n\tadmin off\n%s\n\tapi_users {\n\t\tstore sqlite %s\n%s\n\t}\n}\n", logging, filepath.Join(dir, name+".db"), catalog)
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// No logging: the audit goes to Caddy's default log, on stderr.
	plain := write("Caddyfile", "")
	// A log for the audit in a file, as an operator routes it.
	routed := write("Caddyfile.routed", fmt.Sprintf("\tlog audit {\n\t\toutput file %s\n\t\tformat json\n\t\tinclude http.handlers.api_users.audit\n\t}", auditPath))

	run := func(config string, args ...string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"api-users"}, append(args, "--config", config)...)...)
		cmd.Env = env
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("caddy api-users %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, o.String(), e.String())
		}
		return o.String(), e.String()
	}
	// A log line of Caddy's, or an audit record, is a JSON object with a
	// level; what the commands print never has one.
	isLogLine := func(line string) bool {
		return strings.HasPrefix(strings.TrimSpace(line), "{") && strings.Contains(line, `"level":`)
	}
	quiet := func(what, stdout, stderr string) {
		t.Helper()
		if stderr != "" {
			t.Errorf("%s printed on stderr:\n%s", what, stderr)
		}
		for _, line := range strings.Split(stdout, "\n") {
			if isLogLine(line) || strings.Contains(line, "management change") {
				t.Errorf("%s printed a log line: %s", what, line)
			}
		}
	}

	for _, config := range []string{plain, routed} {
		name := filepath.Base(config)
		out, errOut := run(config, "create", "--org", "acme", "--username", "quiet-bot", "--scopes", "devices:list", "--json")
		quiet(name+": create --json", out, errOut)
		var created struct {
			OK      bool `json:"ok"`
			Created struct {
				Username string `json:"username"`
			} `json:"created"`
		}
		if err := json.Unmarshal([]byte(out), &created); err != nil || !created.OK || created.Created.Username != "quiet-bot" {
			t.Errorf("%s: create --json printed more or less than the response body (%v):\n%s", name, err, out)
		}
		for _, args := range [][]string{
			{"create", "--org", "acme", "--scopes", "devices:list"},
			{"list", "--org", "acme"},
			{"show", "quiet-bot"},
			{"update", "quiet-bot", "--name", "Quiet bot"},
			{"role", "list"},
			{"catalog", "endpoints"},
			{"check"},
		} {
			out, errOut := run(config, args...)
			quiet(name+": "+strings.Join(args, " "), out, errOut)
			if strings.TrimSpace(out) == "" {
				t.Errorf("%s: %s printed nothing", name, strings.Join(args, " "))
			}
		}
	}

	// --verbose shows Caddy's log lines and, where the config's logging
	// sends it to the terminal, the audit record.
	out, errOut := run(plain, "retire", "quiet-bot", "--verbose")
	all := out + errOut
	if !strings.Contains(all, `"msg":"using config from file"`) {
		t.Errorf("retire --verbose printed no log line:\n%s", all)
	}
	if !strings.Contains(all, `"msg":"management change"`) || !strings.Contains(all, `"action":"update_user"`) {
		t.Errorf("retire --verbose printed no audit record:\n%s", all)
	}
	if !strings.Contains(out, "quiet-bot") {
		t.Errorf("retire --verbose lacks the command's own output:\n%s", out)
	}

	// With a log for the audit, the records are in its file, quiet or not,
	// and not on the terminal.
	out, errOut = run(routed, "retire", "quiet-bot", "--verbose")
	if strings.Contains(out+errOut, `"msg":"management change"`) {
		t.Errorf("with a log for the audit, retire --verbose printed the audit record:\n%s%s", out, errOut)
	}
	if !strings.Contains(out+errOut, `"level":`) {
		t.Errorf("retire --verbose printed no log line:\n%s%s", out, errOut)
	}
	audit, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(audit)), "\n") {
		var rec struct {
			Msg, Action, By string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit line is not JSON: %q", line)
		}
		if rec.Msg == "management change" && strings.HasPrefix(rec.By, "cli") {
			actions[rec.Action]++
		}
	}
	for _, a := range []string{"create_user", "update_user"} {
		if actions[a] == 0 {
			t.Errorf("the audit log lacks the CLI's %s; it has %v:\n%s", a, actions, audit)
		}
	}
	if actions["create_user"] != 2 {
		t.Errorf("the audit log has %d create_user records of the CLI, want 2", actions["create_user"])
	}
}
