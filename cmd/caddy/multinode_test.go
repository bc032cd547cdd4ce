package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
)

// TestTwoProcessesOnPostgres runs two real gateway processes on one
// PostgreSQL database, as two nodes behind a load balancer: a user created
// through node A's management API works on node B at once, and a
// credential revoked through node A is refused by node B within
// sync_interval (with NOTIFY, usually within milliseconds).
func TestTwoProcessesOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	srv := pgtest.Start(t)
	const password = "pw-Nodes-41c9-never-logged"
	dbURL := srv.NewRole(t, srv.NewDatabase(t), "gateway", password)
	bin := buildCaddy(t)
	const syncInterval = 500 * time.Millisecond

	a := startNode(t, "A", bin, dbURL, syncInterval)
	b := startNode(t, "B", bin, dbURL, syncInterval)

	created := a.manage(t, "POST", "/v1/products/1337/team", `{"friendly_name": "fleet sync", "scopes": ["devices:list"]}`)
	var c struct {
		Created struct {
			Username string
			Tokens   []struct{ Token string }
			Secret   string
			Keys     []struct{ ID, Value string }
		}
	}
	if err := json.Unmarshal(created, &c); err != nil || len(c.Created.Tokens) != 1 || len(c.Created.Keys) != 1 {
		t.Fatalf("creating a user on node A: %s (%v)", created, err)
	}
	user := c.Created.Username
	// The CLI reads the same database, with the connection string from
	// the same environment variable.
	cli := exec.Command(bin, "api-users", "list", "--org", "acme", "--config", a.config)
	cli.Env = a.env
	if out, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(out), user) || strings.Contains(string(out), password) {
		t.Errorf("caddy api-users list: %v\n%s", err, out)
	}
	bearer := "Bearer " + c.Created.Tokens[0].Token
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+c.Created.Keys[0].Value+":"+c.Created.Secret))
	for _, n := range []*node{a, b} {
		for _, auth := range []string{bearer, basic} {
			if status := n.get(t, auth); status != 200 {
				t.Fatalf("a new user on node %s: %d, want 200", n.name, status)
			}
		}
	}
	// Node B reads the creation from the change log, which drops the user
	// from its cache; let it, and cache the user again, so what follows
	// measures how a revocation reaches a cached user.
	time.Sleep(2 * syncInterval)
	for _, auth := range []string{bearer, basic} {
		if status := b.get(t, auth); status != 200 {
			t.Fatalf("node B: %d, want 200", status)
		}
	}

	measure := func(what, auth string, revoke func()) {
		t.Helper()
		revoke()
		revoked := time.Now()
		if !within(5*time.Second, func() bool {
			status := b.get(t, auth)
			if status != 401 && status != 200 {
				t.Fatalf("node B answered %d", status)
			}
			return status == 401
		}) {
			t.Fatalf("node B still admits the credential 5s after %s", what)
		}
		delay := time.Since(revoked)
		t.Logf("%s through node A: refused by node B after %v", what, delay.Round(100*time.Microsecond))
		if bound := syncInterval + 250*time.Millisecond; delay > bound {
			t.Errorf("node B refused it after %v, more than sync_interval plus a margin (%v)", delay, bound)
		}
	}
	measure("regenerating the secret", basic, func() {
		a.manage(t, "POST", "/v1/products/1337/team/"+user+"/secret", "")
	})
	if status := b.get(t, bearer); status != 200 {
		t.Fatalf("the token after regenerating the secret: %d, want 200", status)
	}
	measure("deleting the user", bearer, func() {
		a.manage(t, "DELETE", "/v1/products/1337/team/"+user, "")
	})

	for _, n := range []*node{a, b} {
		if strings.Contains(n.log.String(), password) {
			t.Errorf("node %s logged the database password", n.name)
		}
	}
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildCaddy builds this command once per test binary; TestMain removes
// it at the end.
func buildCaddy(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apiusers-caddy-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "caddy")
		if out, err := exec.Command("go", "build", "-o", builtBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// node is one gateway process.
type node struct {
	name       string
	gateway    string
	management string
	config     string   // the Caddyfile
	env        []string // its environment, DATABASE_URL included
	log        *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startNode starts a gateway process on the PostgreSQL database dbURL,
// which it reads from the environment, as an operator would pass it.
func startNode(t *testing.T, name, bin, dbURL string, syncInterval time.Duration) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{name: name, log: &syncBuffer{}}
	gatewayPort, managementPort := freePort(t), freePort(t)
	n.gateway = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
	n.management = fmt.Sprintf("http://127.0.0.1:%d", managementPort)
	cfg := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	api_users {
		store postgres {env.DATABASE_URL}
		sync_interval %s
		org acme {
			product 1337 my-product-v1
		}
		endpoint list-devices GET /v1/products/{product}/devices devices:list
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users
	respond "ok"
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users_admin
}
`, syncInterval, gatewayPort, managementPort)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.config = cfgPath
	n.env = append(os.Environ(), "DATABASE_URL="+dbURL, "HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("node %s did not stop on SIGINT", n.name)
		}
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.name, n.log.String())
		}
	})
	waitFor(t, n.gateway)
	return n
}

// get sends a gateway request with the Authorization header auth.
func (n *node) get(t *testing.T, auth string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", n.gateway+"/v1/products/1337/devices", nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// manage calls the management API and returns the body of a 2xx answer.
func (n *node) manage(t *testing.T, method, path, body string) []byte {
	t.Helper()
	return manageAt(t, n.management, n.name, method, path, body)
}

// manageAt calls the management API at base (node name's) and returns the
// body of a 2xx answer; anything else fails the test.
func manageAt(t *testing.T, base, name, method, path, body string) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s on node %s: %d %s", method, path, name, resp.StatusCode, out)
	}
	return out
}
