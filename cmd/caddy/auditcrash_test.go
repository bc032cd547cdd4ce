package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var auditCrashRounds = flag.Int("audit-crash-rounds", 3, "how many times TestAuditCrash kills the server under load")

// The audit bounds TestAuditCrash configures: what a SIGKILL may lose is
// at most auditCrashMaxPending records (and at most those of the last
// auditCrashMaxDelay).
const (
	auditCrashMaxPending = 512
	auditCrashMaxDelay   = 100 * time.Millisecond
	auditCrashClients    = 8
)

// TestAuditCrash runs the real binary with the batched audit writing to
// the api_users_audit writer, in front of an upstream that records every
// request it receives, and kills it with SIGKILL under load,
// -audit-crash-rounds times. Every request carries a unique device ID, so
// each request the upstream received (an allowed decision) can be looked
// for in the audit log: the number missing after a kill must be within
// the configured bound, max_pending. Then, once with a config reload under
// load and a graceful stop (SIGINT) under load, none may be missing.
func TestAuditCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildCaddy(t)
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")

	var upMu sync.Mutex
	received := map[string]bool{} // device IDs the upstream received
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-User") == "" || r.Header.Get("Authorization") != "" {
			http.Error(w, "not from the gateway", http.StatusBadRequest)
			return
		}
		upMu.Lock()
		received[r.URL.Path] = true
		upMu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer up.Close()

	gatewayPort, managementPort, adminPort := freePort(t), freePort(t), freePort(t)
	gateway := fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
	management := fmt.Sprintf("http://127.0.0.1:%d", managementPort)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	log default {
		exclude http.handlers.api_users.audit
	}
	log audit {
		include http.handlers.api_users.audit
		output api_users_audit %s
		format json
	}
	api_users {
		store sqlite %s
		audit {
			max_pending %d
			max_delay %s
		}
		org acme {
			product 1337 my-product-v1
		}
		endpoint get-device GET /v1/products/{product}/devices/{device} devices:get
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users {
		lockout off
	}
	reverse_proxy %s
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users_admin
}
`, adminPort, auditPath, filepath.Join(dir, "api_users.db"), auditCrashMaxPending, auditCrashMaxDelay,
		gatewayPort, strings.TrimPrefix(up.URL, "http://"), managementPort)
	config := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	serverLog := &syncBuffer{}
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", serverLog.String())
		}
	}()
	var cmd *exec.Cmd
	var done chan struct{}
	start := func() {
		t.Helper()
		cmd = exec.Command(bin, "run", "--config", config)
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
		cmd.Stdout, cmd.Stderr = serverLog, serverLog
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done = make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		waitFor(t, management)
		waitFor(t, gateway)
	}
	defer func() {
		if cmd != nil && cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	}()

	start()
	resp, err := http.Post(management+"/v1/products/1337/team", "application/json", strings.NewReader(`{"scopes": ["devices:get"]}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct {
		Created struct{ Tokens []struct{ Token string } }
	}
	if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || len(created.Created.Tokens) != 1 {
		t.Fatalf("creating a user: %v %+v", err, created)
	}
	resp.Body.Close()
	token := created.Created.Tokens[0].Token

	// load sends requests with unique device IDs from several clients
	// until stop is closed, and counts the allowed answers.
	load := func(round string, stop <-chan struct{}, allowed *atomic.Int64) *sync.WaitGroup {
		var wg sync.WaitGroup
		for c := range auditCrashClients {
			wg.Go(func() {
				client := &http.Client{Timeout: 10 * time.Second}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/products/1337/devices/%s-%d-%d", gateway, round, c, i), nil)
					req.Header.Set("Authorization", "Bearer "+token)
					resp, err := client.Do(req)
					if err != nil {
						// The server is gone; the next round starts another.
						select {
						case <-stop:
							return
						default:
							time.Sleep(5 * time.Millisecond)
							continue
						}
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						allowed.Add(1)
					}
				}
			})
		}
		return &wg
	}
	// missing returns the requests of a round the upstream received with
	// no allowed record in the audit log, and how many records it has.
	missing := func(round string) (lost, audited, forwarded int) {
		t.Helper()
		inAudit := map[string]bool{}
		files, _ := filepath.Glob(filepath.Join(dir, "audit*.log"))
		for _, f := range files {
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(fh)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) != nil {
					// A SIGKILL can cut the last line of a write in half.
					continue
				}
				if p, _ := m["path"].(string); m["decision"] == "allow" && strings.Contains(p, "/"+round+"-") {
					inAudit[p] = true
				}
			}
			fh.Close()
		}
		upMu.Lock()
		defer upMu.Unlock()
		for p := range received {
			if !strings.Contains(p, "/"+round+"-") {
				continue
			}
			forwarded++
			if !inAudit[p] {
				lost++
			}
		}
		return lost, len(inAudit), forwarded
	}

	rounds := max(*auditCrashRounds, 1)
	maxLost := 0
	for r := 1; r <= rounds; r++ {
		round := fmt.Sprintf("kill%d", r)
		stop := make(chan struct{})
		var allowed atomic.Int64
		wg := load(round, stop, &allowed)
		target := int64(1000 + rand.IntN(3000))
		eventually(t, 2*time.Minute, fmt.Sprintf("%d allowed answers", target), func() bool { return allowed.Load() >= target })
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-done
		close(stop)
		wg.Wait()
		lost, audited, forwarded := missing(round)
		t.Logf("round %d: SIGKILL after %d allowed answers; the upstream received %d requests, the audit log holds %d of them, %d missing (bound %d)",
			r, allowed.Load(), forwarded, forwarded-lost, lost, auditCrashMaxPending)
		if forwarded < int(target) {
			t.Errorf("round %d: the upstream received %d requests, fewer than the %d answered", r, forwarded, target)
		}
		if lost > auditCrashMaxPending {
			t.Errorf("round %d: %d allowed requests missing from the audit log after SIGKILL, more than max_pending %d", r, lost, auditCrashMaxPending)
		}
		if audited == 0 {
			t.Errorf("round %d: no record of the round reached the log", r)
		}
		maxLost = max(maxLost, lost)
		start()
	}

	// A reload under load, then a graceful stop under load: none lost.
	stop := make(chan struct{})
	var allowed atomic.Int64
	wg := load("graceful", stop, &allowed)
	eventually(t, 2*time.Minute, "1000 allowed answers", func() bool { return allowed.Load() >= 1000 })
	req, _ := http.NewRequest("POST", admin+"/load", strings.NewReader(cfg))
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate") // reload even though the config is the same
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("reloading: %d %s", resp.StatusCode, body)
	}
	reloadedAt := allowed.Load()
	eventually(t, 2*time.Minute, "1000 allowed answers after the reload", func() bool { return allowed.Load() >= reloadedAt+1000 })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop on SIGINT")
	}
	close(stop)
	wg.Wait()
	lost, _, forwarded := missing("graceful")
	t.Logf("reload after %d and graceful stop after %d allowed answers: the upstream received %d requests, %d missing from the audit log",
		reloadedAt, allowed.Load(), forwarded, lost)
	if lost != 0 {
		t.Errorf("%d allowed requests missing from the audit log after a reload and a graceful stop, want 0", lost)
	}
	t.Logf("audit crash: %d rounds of SIGKILL under load lost at most %d records (bound: max_pending %d, max_delay %s); reload and graceful stop lost %d",
		rounds, maxLost, auditCrashMaxPending, auditCrashMaxDelay, lost)
}
