package store_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
	"github.com/apiusers/caddy-api-users/caddymodule/store/storetest"
	"github.com/apiusers/caddy-api-users/policy"
)

func openPostgres(t testing.TB, url string) *store.Postgres {
	t.Helper()
	s, err := store.OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	return s
}

// TestPostgres runs everything against one server, a fresh database per
// store, so the package's PostgreSQL tests cost one initdb.
func TestPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	t.Run("Suite", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			return openPostgres(t, srv.NewSchema(t))
		})
	})
	t.Run("TwoHandles", func(t *testing.T) { testPostgresTwoHandles(t, srv) })
	t.Run("MigrationsAreIdempotentAndConcurrent", func(t *testing.T) { testPostgresMigrations(t, srv) })
	t.Run("RefusesNewerSchema", func(t *testing.T) { testPostgresRefusesNewerSchema(t, srv) })
	t.Run("PruneChanges", func(t *testing.T) { testPostgresPruneChanges(t, srv) })
	t.Run("ChangesCommitInOrder", func(t *testing.T) { testPostgresChangesInOrder(t, srv) })
	t.Run("ListenChanges", func(t *testing.T) { testPostgresListen(t, srv) })
	t.Run("CheckFindsDamage", func(t *testing.T) { testPostgresCheck(t, srv) })
	t.Run("NoPasswordInErrors", func(t *testing.T) { testPostgresNoPasswordInErrors(t, srv) })
	t.Run("BulkCreateUsers", func(t *testing.T) { testPostgresBulk(t, srv) })
	t.Run("Usage", func(t *testing.T) { testPostgresUsage(t, srv) })
}

// testPostgresTwoHandles has two stores on one database, as two gateway
// nodes are, update one user at once: nothing may be lost, and every
// update gets its own change record.
func testPostgresTwoHandles(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	a := openPostgres(t, url)
	defer a.Close()
	b := openPostgres(t, url)
	defer b.Close()
	storetest.Seed(t, a)
	if err := a.CreateUser(t.Context(), &policy.APIUser{ID: "shared", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	// Last-used times written at the same time by both must not be undone
	// by the updates either.
	touched := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	const workers, each = 10, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each+2)
	for w := range 2 * workers {
		s := []*store.Postgres{a, b}[w%2]
		wg.Go(func() {
			for i := range each {
				name := strconv.Itoa(w) + "-" + strconv.Itoa(i)
				_, err := s.UpdateUser(t.Context(), "shared", func(u *policy.APIUser) error {
					u.Scopes = append(u.Scopes, policy.Scope("s"+name+":call"))
					u.Keys = append(u.Keys, policy.Key{ID: "k" + name, Hash: policy.Hash{1}})
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for _, s := range []*store.Postgres{a, b} {
		wg.Go(func() {
			if err := s.TouchUsers(t.Context(), map[string]time.Time{"shared": touched}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, s := range []*store.Postgres{a, b} {
		u, err := s.GetUser(t.Context(), "shared")
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckAllUpdates(t, u, 2*workers*each)
		if !u.LastUsedAt.Equal(touched) {
			t.Errorf("LastUsedAt = %v, want %v: an update undid TouchUsers", u.LastUsedAt, touched)
		}
	}
	changes, err := b.Changes(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Seed's five, the create, and one per update, gapless.
	if want := 5 + 1 + 2*workers*each; len(changes) != want {
		t.Errorf("%d change records, want %d", len(changes), want)
	}
	for i, c := range changes {
		if c.Seq != int64(i+1) {
			t.Fatalf("change %d has Seq %d: sequence numbers must be gapless", i, c.Seq)
		}
	}
	if err := a.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// testPostgresMigrations opens one empty database from several handles at
// once, as nodes starting together do, and then again.
func testPostgresMigrations(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := store.OpenPostgres(t.Context(), url)
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent OpenPostgres: %v", err)
	}
	openPostgres(t, url).Close()
	conn := connect(t, url)
	var n, max int
	if err := conn.QueryRow(t.Context(), `SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max || n < 1 {
		t.Errorf("schema_migrations has %d rows up to version %d, want one per version", n, max)
	}
}

func testPostgresRefusesNewerSchema(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	openPostgres(t, url).Close()
	if _, err := connect(t, url).Exec(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 'from the future')`); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenPostgres(t.Context(), url)
	if err == nil {
		s.Close()
		t.Fatal("OpenPostgres accepted a database with a newer schema")
	}
	for _, want := range []string{"9999", "upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func testPostgresPruneChanges(t *testing.T, srv *pgtest.Server) {
	ctx := t.Context()
	s := openPostgres(t, srv.NewDatabase(t))
	defer s.Close()
	storetest.Seed(t, s)
	last, _ := s.LastChange(ctx)

	if err := s.PruneChanges(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	changes, err := s.Changes(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Seq != last {
		t.Errorf("after pruning everything: %+v, want only the newest, %d", changes, last)
	}
	// Sequence numbers are not reused after pruning, and a reader that
	// was behind sees the gap.
	if err := s.PutRole(ctx, store.Role{Name: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LastChange(ctx); got != last+1 {
		t.Errorf("LastChange = %d after one more change, want %d", got, last+1)
	}
	if changes, _ := s.Changes(ctx, 1, 0); len(changes) != 2 || changes[0].Seq != last {
		t.Errorf("Changes after 1 = %+v, want %d and %d (a gap after 1)", changes, last, last+1)
	}
	if err := s.PruneChanges(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if changes, _ := s.Changes(ctx, 0, 0); len(changes) != 2 {
		t.Errorf("%d changes after pruning none, want 2", len(changes))
	}
}

// testPostgresChangesInOrder writes from many goroutines while a follower
// polls: every change must be seen, none skipped because a later number
// became visible before an earlier one.
func testPostgresChangesInOrder(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	w := openPostgres(t, url)
	defer w.Close()
	r := openPostgres(t, url)
	defer r.Close()
	const writers, each = 8, 15
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				if err := w.PutRole(t.Context(), store.Role{Name: fmt.Sprintf("r%d-%d", i, j)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	seen := map[string]bool{}
	var after int64
	poll := func() {
		changes, err := r.Changes(t.Context(), after, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			if c.Seq != after+1 {
				t.Fatalf("the follower at %d next saw %d: a change was skipped", after, c.Seq)
			}
			after = c.Seq
			seen[c.Key] = true
		}
	}
	stop := make(chan struct{})
	go func() { wg.Wait(); close(stop) }()
	for running := true; running; {
		select {
		case <-stop:
			running = false
		default:
		}
		poll()
	}
	poll()
	if len(seen) != writers*each {
		t.Errorf("the follower saw %d roles, want %d", len(seen), writers*each)
	}
}

// testPostgresListen checks that a committed change is announced, and a
// rolled-back one is not.
func testPostgresListen(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s := openPostgres(t, url)
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{})
	changed := make(chan struct{}, 100)
	stopped := make(chan error, 1)
	go func() {
		stopped <- s.ListenChanges(ctx, func() { close(ready) }, func() { changed <- struct{}{} })
	}()
	select {
	case <-ready:
	case err := <-stopped:
		t.Fatalf("ListenChanges: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("ListenChanges never became ready")
	}
	other := openPostgres(t, url)
	defer other.Close()
	start := time.Now()
	if err := other.PutOrg(t.Context(), policy.Org{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
		t.Logf("a change by another handle was announced after %v", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no announcement within 5s of a committed change")
	}
	// A refused change is rolled back with its announcement.
	if err := other.PutProduct(t.Context(), policy.Product{ID: 1, Org: "initech"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PutProduct with an unknown org: %v", err)
	}
	select {
	case <-changed:
		t.Error("a rolled-back change was announced")
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ListenChanges after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ListenChanges did not return after its context was cancelled")
	}
}

func testPostgresCheck(t *testing.T, srv *pgtest.Server) {
	url := srv.NewDatabase(t)
	s := openPostgres(t, url)
	defer s.Close()
	storetest.Seed(t, s)
	if err := s.CreateUser(t.Context(), storetest.FullUser("checked")); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check on a healthy store: %v", err)
	}
	// A user moved by hand into an org its product is not in.
	if _, err := connect(t, url).Exec(t.Context(), `UPDATE users SET org = 'globex' WHERE id = 'checked'`); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(t.Context()); err == nil || !strings.Contains(err.Error(), `checked (product 1337)`) {
		t.Errorf("Check after damage: %v, want it to name the user and its product", err)
	}
}

// testPostgresNoPasswordInErrors opens stores that cannot work and checks
// that no message quotes the password.
func testPostgresNoPasswordInErrors(t *testing.T, srv *pgtest.Server) {
	const password = "pw-Zq8-never-logged"
	url := srv.NewRole(t, srv.NewDatabase(t), "gateway", password)
	s := openPostgres(t, url) // the password works
	if !strings.Contains(s.Where(), "gateway@") || strings.Contains(s.Where(), password) {
		t.Errorf("Where() = %q, want the user without the password", s.Where())
	}
	s.Close()
	bad := []string{
		strings.Replace(url, password, password+"-wrong", 1),            // refused by the server
		strings.Replace(url, "/test_", "/missing_", 1),                  // no such database
		strings.Replace(url, "port=5432", "port=5999", 1),               // nobody listening
		"postgres://gateway:" + password + "@host:notaport/db",          // unparsable
		"host=/nonexistent user=gateway password=" + password + " port", // unparsable
	}
	for _, u := range bad {
		s, err := store.OpenPostgres(t.Context(), u)
		if err == nil {
			s.Close()
			t.Errorf("OpenPostgres(%s) worked", u)
			continue
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}
