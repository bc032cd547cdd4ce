package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The harness of the cluster tests (quotas, cluster rate limits, usage):
// gateway processes on one PostgreSQL database, each in front of one
// recording upstream the test runs, so the test knows which requests
// really reached the backend, and from which node.

// gwConfig is what a cluster test sets in a gateway's Caddyfile.
type gwConfig struct {
	syncInterval time.Duration
	rateLimits   string        // the global rate_limits option; "" leaves the default
	usageFlush   time.Duration // usage { flush_interval }; 0 leaves the default
	site         string        // lines added to the site's api_users block
}

// gwNode is one gateway process, which can be killed and started again
// on the same ports and database.
type gwNode struct {
	name                string
	bin, config         string
	env                 []string
	gateway, management string
	log                 *syncBuffer
	cmd                 *exec.Cmd
	done                chan struct{}
}

// startGateway writes a gateway's Caddyfile and starts it. Its catalog has
// three endpoints: list-devices (devices:list), get-device (devices:get)
// and delete-device (devices:delete). Allowed requests go to up, with the
// header X-Test-Node naming the node.
func startGateway(t *testing.T, name, bin, dbURL string, up *recorder, c gwConfig) *gwNode {
	t.Helper()
	dir := t.TempDir()
	n := &gwNode{name: name, bin: bin, log: &syncBuffer{}}
	gatewayPort, managementPort := freePort(t), freePort(t)
	n.gateway = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
	n.management = fmt.Sprintf("http://127.0.0.1:%d", managementPort)
	var global strings.Builder
	if c.rateLimits != "" {
		fmt.Fprintf(&global, "\t\trate_limits %s\n", c.rateLimits)
	}
	if c.usageFlush > 0 {
		fmt.Fprintf(&global, "\t\tusage {\n\t\t\tflush_interval %s\n\t\t}\n", c.usageFlush)
	}
	cfg := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	log default {
		exclude http.handlers.api_users.audit
	}
	api_users {
		store postgres {env.DATABASE_URL}
		sync_interval %s
%s		org acme {
			product 1337 my-product-v1
		}
		endpoint list-devices GET /v1/products/{product}/devices devices:list
		endpoint get-device GET /v1/products/{product}/devices/{device} devices:get
		endpoint delete-device DELETE /v1/products/{product}/devices/{device} devices:delete
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users {
		lockout off
%s
	}
	reverse_proxy %s {
		header_up X-Test-Node %s
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users_admin
}
`, c.syncInterval, global.String(), gatewayPort, c.site, up.addr(), name, managementPort)
	n.config = filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.env = append(os.Environ(), "DATABASE_URL="+dbURL, "HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	t.Cleanup(func() {
		if n.cmd != nil {
			_ = n.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-n.done:
			case <-time.After(10 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.done
				t.Errorf("node %s did not stop on SIGINT", n.name)
			}
		}
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.name, n.log.String())
		}
	})
	n.start(t)
	return n
}

// start starts the process and waits until both its sites answer.
func (n *gwNode) start(t *testing.T) {
	t.Helper()
	fmt.Fprintf(n.log, "--- starting node %s\n", n.name)
	cmd := exec.Command(n.bin, "run", "--config", n.config)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(n.done)
	}()
	eventually(t, 30*time.Second, "node "+n.name+" comes up", func() bool {
		select {
		case <-n.done:
			t.Fatalf("node %s exited at start:\n%s", n.name, n.log.String())
		default:
		}
		for _, url := range []string{n.management, n.gateway} {
			resp, err := http.Get(url + "/")
			if err != nil {
				return false
			}
			resp.Body.Close()
		}
		return true
	})
}

// kill ends the process with SIGKILL: no shutdown, no flush.
func (n *gwNode) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing node %s: %v", n.name, err)
	}
	<-n.done
	fmt.Fprintf(n.log, "--- killed node %s\n", n.name)
	n.cmd = nil
}

// stop ends the process the graceful way an operator's service manager
// does: SIGTERM.
func (n *gwNode) stop(t *testing.T) {
	t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Errorf("node %s did not stop on SIGTERM", n.name)
	}
	fmt.Fprintf(n.log, "--- stopped node %s\n", n.name)
	n.cmd = nil
}

// manage calls the management API and returns the body of a 2xx answer.
func (n *gwNode) manage(t *testing.T, method, path, body string) []byte {
	t.Helper()
	return manageAt(t, n.management, n.name, method, path, body)
}

// createUser creates a product user with spec (a JSON object's fields,
// without the braces) through n, and returns its username and bearer
// credential.
func (n *gwNode) createUser(t *testing.T, spec string) (user, bearer string) {
	t.Helper()
	out := n.manage(t, "POST", "/v1/products/1337/team", "{"+spec+"}")
	var c struct {
		Created struct {
			Username string
			Tokens   []struct{ Token string }
		}
	}
	if err := json.Unmarshal(out, &c); err != nil || len(c.Created.Tokens) != 1 {
		t.Fatalf("creating a user on node %s: %s (%v)", n.name, out, err)
	}
	return c.Created.Username, "Bearer " + c.Created.Tokens[0].Token
}

// loadClient is the HTTP client of the load the tests send: it keeps a
// connection per worker instead of opening one per request.
var loadClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64, DisableCompression: true},
}

// answer is what a gateway answered to one request.
type answer struct {
	node       int       // the index of the node asked
	sent, at   time.Time // when the request was sent, when the answer came
	status     int
	code       string // the JSON error's "error" on a refusal
	retryAfter string
	err        error // a transport error: no answer
}

// errorJSON is the gateway's JSON error shape.
type errorJSON struct {
	OK          *bool  `json:"ok"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// send sends one gateway request. A refusal whose body is not the
// gateway's JSON error shape is reported with code "bad-body: ...".
func (n *gwNode) send(idx int, method, path, auth string) answer {
	a := answer{node: idx, sent: time.Now()}
	req, _ := http.NewRequest(method, n.gateway+path, nil)
	req.Header.Set("Authorization", auth)
	resp, err := loadClient.Do(req)
	if err != nil {
		a.at, a.err = time.Now(), err
		return a
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	a.at = time.Now()
	a.status, a.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	if err != nil {
		a.err = err
		return a
	}
	if a.status != http.StatusOK {
		var e errorJSON
		if json.Unmarshal(body, &e) != nil || e.OK == nil || *e.OK || e.Error == "" || e.Description == "" {
			a.code = "bad-body: " + string(body)
		} else {
			a.code = e.Error
		}
	}
	return a
}

// recorder is the upstream: it counts the requests that reach it, per
// node and API user.
type recorder struct {
	srv   *httptest.Server
	total atomic.Int64
	mu    sync.Mutex
	count map[[2]string]int // {node, user}
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{count: map[[2]string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.total.Add(1)
		r.mu.Lock()
		r.count[[2]string{req.Header.Get("X-Test-Node"), req.Header.Get("X-Api-User")}]++
		r.mu.Unlock()
		io.WriteString(w, "ok")
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) addr() string { return strings.TrimPrefix(r.srv.URL, "http://") }

// of is how many requests of user reached the upstream through node.
func (r *recorder) of(node, user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[[2]string{node, user}]
}

// drive sends GET path with auth through each node from workers
// goroutines per node, each at most one request per pace (0: as fast as
// it can), until stop says so (it is asked before every request, with
// the worker's last answer, nil before its first; from every worker at
// once), and returns every answer, in the order they came.
func drive(nodes []*gwNode, workers int, pace time.Duration, path, auth string, stop func(last *answer) bool) []answer {
	var mu sync.Mutex
	var out []answer
	var wg sync.WaitGroup
	for i, n := range nodes {
		for range workers {
			wg.Go(func() {
				var mine []answer
				var last *answer
				next := time.Now()
				for {
					if pace > 0 {
						if d := time.Until(next); d > 0 {
							time.Sleep(d)
						}
						next = next.Add(pace)
						if now := time.Now(); next.Before(now) {
							next = now // do not catch up after a stall
						}
					}
					if stop(last) {
						break
					}
					mine = append(mine, n.send(i, "GET", path, auth))
					last = &mine[len(mine)-1]
				}
				mu.Lock()
				out = append(out, mine...)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b answer) int { return a.at.Compare(b.at) })
	return out
}

// maxInWindow is the largest number of times in any interval of length
// d; times is sorted.
func maxInWindow(times []time.Time, d time.Duration) int {
	best, j := 0, 0
	for i := range times {
		for times[i].Sub(times[j]) >= d {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// retryAfterSeconds parses a Retry-After header of whole seconds.
func retryAfterSeconds(s string) (time.Duration, bool) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}
