package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExampleQuickStart does what the README's quick start does, with the
// real binary and the shipped Caddyfile.example (on free ports): start the
// gateway, create a user with the CLI, reach the echo upstream with its
// token, get refused where the user has no rights, delete it with the CLI
// and get refused within the sync bound.
func TestExampleQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	gatewayPort, upstreamPort, adminPort := freePort(t), freePort(t), freePort(t)
	cfg := string(example)
	for _, r := range []struct{ old, new string }{
		{":8080", fmt.Sprintf(":%d", gatewayPort)},
		{":9000", fmt.Sprintf(":%d", upstreamPort)},
		{":8081", fmt.Sprintf(":%d", adminPort)},
	} {
		if !strings.Contains(cfg, r.old) {
			t.Fatalf("Caddyfile.example no longer mentions %s", r.old)
		}
		cfg = strings.ReplaceAll(cfg, r.old, r.new)
	}
	// No admin endpoint of our own, so parallel runs do not collide on :2019.
	cfg = strings.Replace(cfg, "{\n", "{\n\tadmin off\n", 1)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "HOME="+dir)

	serverLog := &syncBuffer{}
	server := exec.Command(bin, "run", "--config", cfgPath)
	server.Env = env
	server.Stdout, server.Stderr = serverLog, serverLog
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = server.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- server.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = server.Process.Kill()
			t.Error("server did not stop on SIGINT")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog.String())
		}
	}()
	// "localhost", as the README's curl commands say: the Host header then
	// names no site of the example, which must still answer.
	gateway := fmt.Sprintf("http://localhost:%d", gatewayPort)
	waitFor(t, gateway)

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"api-users"}, append(args, "--config", cfgPath)...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("caddy api-users %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	created := cli("create", "--product", "my-product-v1", "--scopes", "devices:list,devices:get", "--name", "inventory sync", "--json")
	token := regexp.MustCompile(`apiu_at_[0-9a-f]{48}`).FindString(created)
	m := regexp.MustCompile(`"username":\s*"([^"]+)"`).FindStringSubmatch(created)
	if token == "" || m == nil {
		t.Fatalf("create printed no token or username:\n%s", created)
	}
	username := m[1]

	get := func(path, token string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", gateway+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}

	status, body := get("/v1/products/my-product-v1/devices?page=2", token)
	if status != 200 {
		t.Fatalf("allowed request: %d %s", status, body)
	}
	var echo struct {
		Method, Path, Query string
		Headers             map[string]string
	}
	if err := json.Unmarshal(body, &echo); err != nil {
		t.Fatalf("echo upstream answered %s: %v", body, err)
	}
	if echo.Method != "GET" || echo.Path != "/v1/products/my-product-v1/devices" || echo.Query != "page=2" {
		t.Errorf("upstream saw %s %s ? %s", echo.Method, echo.Path, echo.Query)
	}
	want := map[string]string{"Authorization": "", "X-Api-User": username, "X-Api-User-Org": "acme", "X-Api-User-Product": "1337", "X-Acting-User": username, "X-Proxied-User": ""}
	for h, w := range want {
		if echo.Headers[h] != w {
			t.Errorf("upstream header %s = %q, want %q", h, echo.Headers[h], w)
		}
	}

	if status, body := get("/v1/products/other-product/devices", token); status != 403 || !strings.Contains(string(body), `"tenant_mismatch"`) {
		t.Errorf("other product: %d %s, want 403 tenant_mismatch", status, body)
	}
	if status, body := get("/v1/products/1337/devices", ""); status != 401 || !strings.Contains(string(body), `"missing_credentials"`) {
		t.Errorf("no credential: %d %s, want 401 missing_credentials", status, body)
	}
	if out := cli("list", "--org", "acme"); !strings.Contains(out, username) || strings.Contains(out, token) {
		t.Errorf("list does not show the user, or shows its token:\n%s", out)
	}

	cli("delete", username)
	deleted := time.Now()
	var last int
	if !within(5*time.Second, func() bool {
		last, _ = get("/v1/products/1337/devices", token)
		return last == 401
	}) {
		t.Fatalf("deleted user still gets %d after 5s", last)
	}
	t.Logf("deletion by the CLI enforced by the running gateway after %v", time.Since(deleted).Round(time.Millisecond))
	if strings.Contains(serverLog.String(), token) {
		t.Error("the server log contains the access token")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, url string) {
	t.Helper()
	eventually(t, 30*time.Second, url+" comes up", func() bool {
		resp, err := http.Get(url + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
}
