package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

var crashRounds = flag.Int("crash-rounds", 3, "how many times TestCrash kills the server in the middle of a stream of writes")

// crashWriters is how many clients write through the management API at
// once during each round of TestCrash.
const crashWriters = 4

// TestCrash runs the real binary on a SQLite store, streams management
// writes from several concurrent clients (creates, renames, scope changes
// that replace the token, added and deleted keys, regenerated Secrets,
// rotated tokens, deletes), kills the process with SIGKILL in the middle of
// the stream, and restarts it on the same store, -crash-rounds times.
// After each kill the store must pass its integrity check and hold every
// acknowledged write (one whose 2xx answer the client received) with
// exactly the acknowledged content, credential hashes included; a write
// that was in flight at the kill must be either wholly there or wholly
// absent. After each restart the server must serve that same state: the
// management API shows it, the gateway admits every acknowledged
// credential and refuses every credential an acknowledged write revoked.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	srv := newCrashServer(t, buildCaddy(t))
	srv.start(t)
	writers := make([]*crashWriter, crashWriters)
	for i := range writers {
		writers[i] = &crashWriter{n: i, users: map[string]*crashUser{}, client: &http.Client{Timeout: time.Minute}}
	}
	var acked, inFlight, applied, checked int
	rounds := max(*crashRounds, 1)
	for round := 1; round <= rounds; round++ {
		// Kill after a number of acknowledged writes, not after a time,
		// so a slow machine kills mid-stream too.
		target := int64(50 + rand.IntN(250))
		var acks atomic.Int64
		var killed atomic.Bool
		var running atomic.Int32
		var wg sync.WaitGroup
		for _, w := range writers {
			running.Add(1)
			wg.Go(func() {
				defer running.Add(-1)
				w.write(t, srv, round, &acks, &killed)
			})
		}
		within(2*time.Minute, func() bool { return acks.Load() >= target || running.Load() == 0 || t.Failed() })
		killed.Store(true)
		srv.kill(t)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}

		// The store as the killed process left it.
		roundInFlight, roundApplied, n := checkStore(t, srv.dbPath, writers)
		srv.start(t)
		// The same state, as the restarted server serves it.
		checkServed(t, srv, writers)
		if t.Failed() {
			t.FailNow()
		}
		t.Logf("round %d: killed after %d acknowledged writes; %d writes in flight at the kill (%d applied, %d not); %d users checked in the store and through the restarted server",
			round, acks.Load(), roundInFlight, roundApplied, roundInFlight-roundApplied, n)
		acked += int(acks.Load())
		inFlight += roundInFlight
		applied += roundApplied
		checked += n
	}
	srv.stop(t)
	if err := checkIntegrity(srv.dbPath); err != nil {
		t.Errorf("after a clean stop: %v", err)
	}
	t.Logf("crash: %d rounds of SIGKILL, %d acknowledged writes all present with their content; %d writes in flight at a kill (%d applied whole, %d not at all); %d user checks",
		rounds, acked, inFlight, applied, inFlight-applied, checked)
}

// crashServer is the binary on one SQLite store, started and killed again
// and again on the same ports.
type crashServer struct {
	bin, config, dbPath string
	env                 []string
	gateway, management string
	log                 *syncBuffer
	cmd                 *exec.Cmd
	done                chan struct{}
}

func newCrashServer(t *testing.T, bin string) *crashServer {
	t.Helper()
	dir := t.TempDir()
	s := &crashServer{bin: bin, dbPath: filepath.Join(dir, "store", "api_users.db"), log: &syncBuffer{}}
	gatewayPort, managementPort := freePort(t), freePort(t)
	s.gateway = fmt.Sprintf("http://127.0.0.1:%d", gatewayPort)
	s.management = fmt.Sprintf("http://127.0.0.1:%d", managementPort)
	cfg := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	api_users {
		store sqlite %s
		org acme {
			product 1337 my-product-v1
		}
		endpoint list-devices GET /v1/products/{product}/devices devices:list
		endpoint get-device GET /v1/products/{product}/devices/{device} devices:get
	}
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users {
		lockout off
	}
	respond "ok"
}

http://127.0.0.1:%d {
	bind 127.0.0.1
	api_users_admin
}
`, s.dbPath, gatewayPort, managementPort)
	s.config = filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = append(os.Environ(), "HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	t.Cleanup(func() {
		if s.cmd != nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.log.String())
		}
	})
	return s
}

func (s *crashServer) start(t *testing.T) {
	t.Helper()
	fmt.Fprintf(s.log, "--- starting the server\n")
	cmd := exec.Command(s.bin, "run", "--config", s.config)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	waitFor(t, s.management)
	waitFor(t, s.gateway)
}

// kill ends the server with SIGKILL: no shutdown, no checkpoint, no
// flush.
func (s *crashServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("killing the server: %v", err)
	}
	<-s.done
	fmt.Fprintf(s.log, "--- killed the server\n")
	s.cmd = nil
}

// stop ends the server the clean way.
func (s *crashServer) stop(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Error("the server did not stop on SIGINT")
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// crashUser is what the acknowledged writes say about one API user.
type crashUser struct {
	id                string
	team              string // the team route it was created under
	name, description string
	scopes            []string
	token, secret     string
	keys              map[string]string // key ID → value
	gone              bool              // deleted (or, as a prior state, not created yet)

	// Credentials an acknowledged write revoked: they must stay refused.
	deadToken, deadBasic string

	pending *pendingWrite // the write in flight when the server was killed
}

// pendingWrite is a write whose answer never came: the store must hold
// either the state before it or the state after it.
type pendingWrite struct {
	op    string
	prior *crashUser
	after *crashUser
	// What the state after holds that the test cannot know: the values
	// were in the answer that never came.
	newToken, newSecret, newKey bool
}

func (u *crashUser) clone() *crashUser {
	c := *u
	c.scopes = slices.Clone(u.scopes)
	c.keys = make(map[string]string, len(u.keys))
	for k, v := range u.keys {
		c.keys[k] = v
	}
	c.pending = nil
	return &c
}

func (u *crashUser) path() string { return u.team + "/" + u.id }

func (u *crashUser) basic(keyID string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.id+":"+u.keys[keyID]+":"+u.secret))
}

func (u *crashUser) anyKey() string {
	for id := range u.keys {
		return id
	}
	return ""
}

// crashWriter is one client streaming writes; it alone writes its users,
// so what it was told is the whole truth about them.
type crashWriter struct {
	n      int
	users  map[string]*crashUser
	seq    int
	client *http.Client
}

var crashScopes = [][]string{{"devices:list"}, {"devices:list", "devices:get"}}

// write streams writes until the server is killed.
func (w *crashWriter) write(t *testing.T, srv *crashServer, round int, acks *atomic.Int64, killed *atomic.Bool) {
	for !killed.Load() {
		w.seq++
		label := fmt.Sprintf("w%d-r%d-%d", w.n, round, w.seq)
		var live []*crashUser
		for _, u := range w.users {
			if !u.gone {
				live = append(live, u)
			}
		}
		slices.SortFunc(live, func(a, b *crashUser) int { return strings.Compare(a.id, b.id) })
		if len(live) < 3 || rand.IntN(5) == 0 {
			u := &crashUser{id: "crash-" + label, team: "/v1/orgs/acme/team", gone: true, keys: map[string]string{}}
			if w.seq%2 == 0 {
				u.team = "/v1/products/1337/team"
			}
			w.users[u.id] = u
			after := &crashUser{id: u.id, team: u.team, name: "created " + label, description: "by writer " + fmt.Sprint(w.n), scopes: crashScopes[w.seq%2], keys: map[string]string{}}
			body := map[string]any{"username": u.id, "friendly_name": after.name, "description": after.description, "scopes": after.scopes}
			var r struct {
				Created struct {
					Username string
					Tokens   []struct{ Token string }
					Secret   string
					Keys     []struct{ ID, Value string }
				}
			}
			if !w.do(t, srv, u, "create", "POST", u.team, body, &r, &pendingWrite{after: after, newToken: true, newSecret: true, newKey: true}) {
				return
			}
			if r.Created.Username != u.id || len(r.Created.Tokens) != 1 || r.Created.Secret == "" || len(r.Created.Keys) != 1 {
				t.Errorf("create %s answered %+v", u.id, r.Created)
				return
			}
			*u = *after
			u.token, u.secret = r.Created.Tokens[0].Token, r.Created.Secret
			u.keys[r.Created.Keys[0].ID] = r.Created.Keys[0].Value
			acks.Add(1)
			continue
		}
		u := live[rand.IntN(len(live))]
		after := u.clone()
		switch op := rand.IntN(8); {
		case op == 0 || op == 1:
			after.name, after.description = "renamed "+label, "described "+label
			var r struct {
				TokenReplaced bool `json:"token_replaced"`
			}
			if !w.do(t, srv, u, "rename", "PUT", u.path(), map[string]any{"friendly_name": after.name, "description": after.description}, &r, &pendingWrite{after: after}) {
				return
			}
			if r.TokenReplaced {
				t.Errorf("renaming %s replaced its token", u.id)
				return
			}
		case op == 2:
			after.scopes = crashScopes[0]
			if len(u.scopes) == 1 {
				after.scopes = crashScopes[1]
			}
			var r struct {
				TokenReplaced bool `json:"token_replaced"`
				User          struct{ Tokens []struct{ Token string } }
			}
			if !w.do(t, srv, u, "change scopes", "PUT", u.path(), map[string]any{"scopes": after.scopes}, &r, &pendingWrite{after: after, newToken: true}) {
				return
			}
			if !r.TokenReplaced || len(r.User.Tokens) != 1 {
				t.Errorf("changing the scopes of %s did not replace its token", u.id)
				return
			}
			after.deadToken, after.token = u.token, r.User.Tokens[0].Token
		case op == 3 && len(u.keys) < 8:
			var r struct{ Key struct{ ID, Value string } }
			if !w.do(t, srv, u, "add key", "POST", u.path()+"/keys", nil, &r, &pendingWrite{after: after, newKey: true}) {
				return
			}
			after.keys[r.Key.ID] = r.Key.Value
		case op == 4 && len(u.keys) > 0:
			id := u.anyKey()
			delete(after.keys, id)
			if !w.do(t, srv, u, "delete key", "DELETE", u.path()+"/keys/"+id, nil, nil, &pendingWrite{after: after}) {
				return
			}
			after.deadBasic = u.basic(id)
		case op == 5:
			var r struct{ Secret string }
			if !w.do(t, srv, u, "regenerate secret", "POST", u.path()+"/secret", nil, &r, &pendingWrite{after: after, newSecret: true}) {
				return
			}
			if id := u.anyKey(); id != "" {
				after.deadBasic = u.basic(id)
			}
			after.secret = r.Secret
		case op == 6:
			var r struct{ Token string }
			if !w.do(t, srv, u, "rotate token", "POST", u.path()+"/token", nil, &r, &pendingWrite{after: after, newToken: true}) {
				return
			}
			after.deadToken, after.token = u.token, r.Token
		case op == 7:
			after.gone = true
			if !w.do(t, srv, u, "delete", "DELETE", u.path(), nil, nil, &pendingWrite{after: after}) {
				return
			}
		default:
			continue
		}
		*u = *after
		acks.Add(1)
	}
}

// do sends one write for u. It returns true when the write was
// acknowledged, with its answer decoded into out. When no answer came,
// the server is gone: it records the write as pending on u and returns
// false, and so does a refusal, which fails the test.
func (w *crashWriter) do(t *testing.T, srv *crashServer, u *crashUser, op, method, path string, body, out any, p *pendingWrite) bool {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Error(err)
			return false
		}
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, srv.management+path, r)
	if err != nil {
		t.Error(err)
		return false
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	p.op, p.prior = op, u.clone()
	resp, err := w.client.Do(req)
	var data []byte
	if err == nil {
		data, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		u.pending = p
		return false
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("%s %s (%s): %d %s", method, path, op, resp.StatusCode, data)
		return false
	}
	var ok struct{ OK bool }
	if err := json.Unmarshal(data, &ok); err != nil || !ok.OK {
		t.Errorf("%s %s (%s): answer %s", method, path, op, data)
		return false
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Errorf("%s %s (%s): decoding %s: %v", method, path, op, data, err)
			return false
		}
	}
	return true
}

func checkIntegrity(dbPath string) error {
	s, err := store.OpenSQLite(dbPath)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Check(context.Background())
}

// checkStore opens the store the killed server left, runs its integrity
// check, and compares every user with what the acknowledged writes say.
// A user with a write in flight must match the state before it or the
// state after it; the model then takes the state found, or forgets the
// user when that state holds a credential whose value never arrived. It
// returns how many writes were in flight, how many of them were applied,
// and how many users it checked.
func checkStore(t *testing.T, dbPath string, writers []*crashWriter) (inFlight, applied, checked int) {
	t.Helper()
	s, err := store.OpenSQLite(dbPath)
	if err != nil {
		t.Fatalf("opening the store after the kill: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("the store after the kill: %v", err)
	}
	for _, w := range writers {
		for id, u := range w.users {
			got, err := s.GetUser(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				got, err = nil, nil
			}
			if err != nil {
				t.Fatalf("reading %s: %v", id, err)
			}
			checked++
			p := u.pending
			if p == nil {
				if m := storedMismatch(got, u, p, false); m != "" {
					t.Errorf("%s after the kill: %s", id, m)
				}
				continue
			}
			inFlight++
			if storedMismatch(got, p.prior, p, false) == "" {
				*u = *p.prior // not applied
				continue
			}
			if m := storedMismatch(got, p.after, p, true); m != "" {
				t.Errorf("%s after the kill, with %q in flight: neither the state before (%s) nor the state after (%s)",
					id, p.op, storedMismatch(got, p.prior, p, false), m)
				continue
			}
			applied++
			if p.newToken || p.newSecret || p.newKey {
				delete(w.users, id) // its new credential is unknown
			} else {
				*u = *p.after
			}
		}
	}
	return inFlight, applied, checked
}

// storedMismatch says how the stored user got differs from want, or "".
// With after set, the credentials p issued are not compared (their values
// never arrived), only their presence.
func storedMismatch(got *policy.APIUser, want *crashUser, p *pendingWrite, after bool) string {
	if want.gone {
		if got != nil {
			return "present, want absent"
		}
		return ""
	}
	if got == nil {
		return "absent"
	}
	if got.FriendlyName != want.name || got.Description != want.description {
		return fmt.Sprintf("name %q, description %q; want %q, %q", got.FriendlyName, got.Description, want.name, want.description)
	}
	scopes := make([]string, len(got.Scopes))
	for i, s := range got.Scopes {
		scopes[i] = string(s)
	}
	if !sameStrings(scopes, want.scopes) {
		return fmt.Sprintf("scopes %v, want %v", scopes, want.scopes)
	}
	wantOrg, wantProduct := "acme", int64(0)
	if strings.HasPrefix(want.team, "/v1/products/") {
		wantProduct = 1337
	}
	if got.Org != wantOrg || got.Product != wantProduct {
		return fmt.Sprintf("org %q product %d, want %q %d", got.Org, got.Product, wantOrg, wantProduct)
	}
	if !(after && p.newToken) && got.TokenHash != policy.HashOf(want.token) {
		return "not the acknowledged token"
	}
	if !(after && p.newSecret) && got.SecretHash != policy.HashOf(want.secret) {
		return "not the acknowledged secret"
	}
	extra := 0
	if after && p.newKey {
		extra = 1
	}
	if len(got.Keys) != len(want.keys)+extra {
		return fmt.Sprintf("%d keys, want %d", len(got.Keys), len(want.keys)+extra)
	}
	for id, value := range want.keys {
		i := slices.IndexFunc(got.Keys, func(k policy.Key) bool { return k.ID == id })
		if i < 0 {
			return fmt.Sprintf("no key %s", id)
		}
		if got.Keys[i].Hash != policy.HashOf(value) {
			return fmt.Sprintf("key %s is not the acknowledged one", id)
		}
	}
	return ""
}

func sameStrings(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// checkServed checks that the restarted server serves what the
// acknowledged writes say: the management API shows each user as it was
// left, the gateway admits its current credentials and refuses the ones
// acknowledged writes revoked, and a deleted user is gone everywhere.
func checkServed(t *testing.T, srv *crashServer, writers []*crashWriter) {
	t.Helper()
	gateway := func(auth string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.gateway+"/v1/products/1337/devices", nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("gateway: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, w := range writers {
		for id, u := range w.users {
			resp, err := http.Get(srv.management + u.path())
			if err != nil {
				t.Fatalf("management API: %v", err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if u.gone {
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("deleted %s: GET answered %d %s", id, resp.StatusCode, data)
				}
				if u.token != "" {
					if status := gateway("Bearer " + u.token); status != 401 {
						t.Errorf("deleted %s: its token got %d, want 401", id, status)
					}
				}
				continue
			}
			var r struct {
				User struct {
					FriendlyName string `json:"friendly_name"`
					Description  string
					Scopes       []string
					Keys         []struct{ ID string }
				}
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &r) != nil {
				t.Errorf("%s: GET answered %d %s", id, resp.StatusCode, data)
				continue
			}
			var keyIDs []string
			for _, k := range r.User.Keys {
				keyIDs = append(keyIDs, k.ID)
			}
			if r.User.FriendlyName != u.name || r.User.Description != u.description || !sameStrings(r.User.Scopes, u.scopes) || !sameStrings(keyIDs, slices.Collect(maps.Keys(u.keys))) {
				t.Errorf("%s: the restarted server shows %s, want name %q, description %q, scopes %v, keys %v", id, data, u.name, u.description, u.scopes, slices.Collect(maps.Keys(u.keys)))
			}
			if status := gateway("Bearer " + u.token); status != 200 {
				t.Errorf("%s: its acknowledged token got %d, want 200", id, status)
			}
			for keyID := range u.keys {
				if status := gateway(u.basic(keyID)); status != 200 {
					t.Errorf("%s: its acknowledged key %s and secret got %d, want 200", id, keyID, status)
				}
			}
			if u.deadToken != "" {
				if status := gateway("Bearer " + u.deadToken); status != 401 {
					t.Errorf("%s: a token an acknowledged write replaced got %d, want 401", id, status)
				}
			}
			if u.deadBasic != "" {
				if status := gateway(u.deadBasic); status != 401 {
					t.Errorf("%s: a key or secret an acknowledged write revoked got %d, want 401", id, status)
				}
			}
		}
	}
}
