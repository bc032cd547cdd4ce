package store_test

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/storetest"
	"github.com/apiusers/caddy-api-users/policy"
)

func openSQLite(t *testing.T, path string) *store.SQLite {
	t.Helper()
	s, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatalf("OpenSQLite(%s): %v", path, err)
	}
	return s
}

func TestSQLiteSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "users.db"))
	})
}

func TestSQLiteCreatesPrivateFiles(t *testing.T) {
	// A space and a '#' must reach SQLite as part of the name.
	path := filepath.Join(t.TempDir(), "caddy", "data #1", "users.db")
	s := openSQLite(t, path)
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700, path: 0o600, path + "-wal": 0o600, path + "-shm": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s has mode %o, want %o", p, got, want)
		}
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 || len(names) != 1 {
		t.Errorf("after Close, %s holds %q; want only a non-empty users.db (SQLite opened another file?)", filepath.Dir(path), names)
	}
}

func TestSQLitePersistsAcrossReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "users.db")
	s := openSQLite(t, path)
	storetest.Seed(t, s)
	u := storetest.FullUser("durable")
	// SQLite keeps nanoseconds, and the Unix epoch is not the zero time.
	u.ExpiresAt = time.Date(2040, 1, 2, 3, 4, 5, 123456789, time.UTC)
	u.LastUsedAt = time.Unix(0, 0).UTC()
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRole(ctx, store.Role{Name: "viewer", Scopes: []string{"devices:list"}}); err != nil {
		t.Fatal(err)
	}
	want, err := s.GetUser(ctx, "durable")
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := s.LastChange(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSQLite(t, path)
	defer s.Close()
	got, err := s.GetUser(ctx, "durable")
	if err != nil {
		t.Fatalf("after reopening: %v", err)
	}
	if !got.ExpiresAt.Equal(u.ExpiresAt) || got.ExpiresAt.Nanosecond() != 123456789 {
		t.Errorf("ExpiresAt = %v, want %v to the nanosecond", got.ExpiresAt, u.ExpiresAt)
	}
	if got.LastUsedAt.IsZero() || !got.LastUsedAt.Equal(time.Unix(0, 0)) {
		t.Errorf("LastUsedAt = %v, want the Unix epoch", got.LastUsedAt)
	}
	if got.Version != want.Version || got.TokenHash != want.TokenHash || len(got.Keys) != 2 || got.FriendlyName != want.FriendlyName {
		t.Errorf("after reopening: %+v, want %+v", got, want)
	}
	if roles, err := s.ListRoles(ctx); err != nil || len(roles) != 1 {
		t.Errorf("roles after reopening: %+v, %v", roles, err)
	}
	if got, _ := s.LastChange(ctx); got != seq {
		t.Errorf("LastChange after reopening = %d, want %d", got, seq)
	}
}

func TestSQLiteMigrationsAreIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	for range 3 {
		s := openSQLite(t, path)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	db := rawDB(t, path)
	var n, max int
	if err := db.QueryRow(`SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	if n != max || n < 1 {
		t.Errorf("schema_migrations has %d rows up to version %d after three opens, want one per version", n, max)
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	s := openSQLite(t, path)
	s.Close()
	db := rawDB(t, path)
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 'from the future')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err := store.OpenSQLite(path)
	if err == nil {
		s.Close()
		t.Fatal("OpenSQLite accepted a database with a newer schema")
	}
	for _, want := range []string{"9999", "upgrade"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSQLiteRefusesAnotherFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	if err := os.WriteFile(path, []byte("this is not a database, it is a text file of some length"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := store.OpenSQLite(path); err == nil {
		s.Close()
		t.Fatal("OpenSQLite accepted a text file")
	}
	if _, err := store.OpenSQLite(""); err == nil {
		t.Error("OpenSQLite accepted an empty path")
	}
}

// TestSQLiteTwoHandles has two stores on one file, as the gateway and the
// CLI are, update one user at once: the file's write lock, taken at the
// start of each transaction, must serialize them with nothing lost. An
// update may fail, and say so, when the other handle held the lock past
// the busy timeout (SQLite's busy handler polls, so a handle whose writers
// follow each other closely can starve the other's on a loaded machine);
// every update that succeeded must be there, and both handles must have
// written.
func TestSQLiteTwoHandles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	a := openSQLite(t, path)
	defer a.Close()
	b := openSQLite(t, path)
	defer b.Close()
	storetest.Seed(t, a)
	if err := a.CreateUser(t.Context(), &policy.APIUser{ID: "shared", Org: "acme"}); err != nil {
		t.Fatal(err)
	}

	const workers, each = 2, 40
	var wg sync.WaitGroup
	var done [2]atomic.Int64 // successful updates per handle
	var busy atomic.Int64
	for w := range 2 * workers {
		s := []*store.SQLite{a, b}[w%2]
		wg.Go(func() {
			for i := range each {
				name := strconv.Itoa(w) + "-" + strconv.Itoa(i)
				_, err := s.UpdateUser(t.Context(), "shared", func(u *policy.APIUser) error {
					u.Scopes = append(u.Scopes, policy.Scope("s"+name+":call"))
					u.Keys = append(u.Keys, policy.Key{ID: "k" + name, Hash: policy.Hash{1}})
					return nil
				})
				switch {
				case err == nil:
					done[w%2].Add(1)
				case strings.Contains(err.Error(), "SQLITE_BUSY"):
					busy.Add(1)
				default:
					t.Error(err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	n := int(done[0].Load() + done[1].Load())
	t.Logf("%d updates through handle a, %d through b, %d timed out waiting for the lock", done[0].Load(), done[1].Load(), busy.Load())
	if done[0].Load() == 0 || done[1].Load() == 0 {
		t.Fatalf("one handle never wrote: a %d, b %d", done[0].Load(), done[1].Load())
	}
	for _, s := range []*store.SQLite{a, b} {
		u, err := s.GetUser(t.Context(), "shared")
		if err != nil {
			t.Fatal(err)
		}
		storetest.CheckAllUpdates(t, u, n)
	}
	changes, err := b.Changes(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Seed's five, the create, and one per update, seen from either handle.
	if want := 5 + 1 + n; len(changes) != want {
		t.Errorf("%d change records, want %d", len(changes), want)
	}
	if err := a.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func TestSQLitePruneChanges(t *testing.T) {
	ctx := t.Context()
	s := openSQLite(t, filepath.Join(t.TempDir(), "users.db"))
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
	if got, _ := s.LastChange(ctx); got != last {
		t.Errorf("LastChange = %d after pruning, want %d", got, last)
	}
	// Sequence numbers are not reused after pruning.
	if err := s.PutRole(ctx, store.Role{Name: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LastChange(ctx); got != last+1 {
		t.Errorf("LastChange = %d after one more change, want %d", got, last+1)
	}
	// Pruning nothing old keeps everything.
	if err := s.PruneChanges(ctx, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if changes, _ := s.Changes(ctx, 0, 0); len(changes) != 2 {
		t.Errorf("%d changes after pruning none, want 2", len(changes))
	}
}

func TestSQLiteCheckFindsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	s := openSQLite(t, path)
	defer s.Close()
	storetest.Seed(t, s)
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("Check on a healthy store: %v", err)
	}
	// A product whose org vanished, as a hand edit with foreign keys off
	// would leave it.
	db := rawDB(t, path)
	if _, err := db.Exec(`PRAGMA foreign_keys = OFF`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO products (id, org) VALUES (77, 'vanished')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	err := s.Check(t.Context())
	if err == nil || !strings.Contains(err.Error(), "foreign key") {
		t.Errorf("Check after damage: %v, want a foreign key violation", err)
	}
}

func TestSQLiteRefusesOutOfRangeTime(t *testing.T) {
	s := openSQLite(t, filepath.Join(t.TempDir(), "users.db"))
	defer s.Close()
	storetest.Seed(t, s)
	u := &policy.APIUser{ID: "far", Org: "acme", ExpiresAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.CreateUser(t.Context(), u); err == nil {
		t.Error("CreateUser accepted an expiry in the year 3000, which the store cannot keep")
	}
	if _, err := s.GetUser(t.Context(), "far"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser(far): %v, want ErrNotFound", err)
	}
}

// rawDB opens the file directly, one connection, as an operator's tool
// would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestSQLiteUpgradesFromTheFirstSchema: a store written by the first
// release (schema version 1) opens with this one; its users keep every
// field, gain no rate limit, and can be given one.
func TestSQLiteUpgradesFromTheFirstSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.db")
	initSQL, err := os.ReadFile("migrations/sqlite/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	for _, stmt := range []string{
		string(initSQL),
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
		`INSERT INTO schema_migrations VALUES (1, 'first release')`,
		`INSERT INTO orgs (id) VALUES ('acme')`,
		`INSERT INTO users (id, org, scopes, idle_timeout_ns, version) VALUES ('old-user', 'acme', '["devices:list"]', 3600000000000, 4)`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("building a version 1 store: %v", err)
		}
	}
	db.Close()

	s := openSQLite(t, path)
	defer s.Close()
	u, err := s.GetUser(t.Context(), "old-user")
	if err != nil {
		t.Fatal(err)
	}
	if u.IdleTimeout != time.Hour || u.Version != 4 || len(u.Scopes) != 1 || u.RateLimit != (policy.RateLimit{}) {
		t.Fatalf("after the upgrade: idle %v, version %d, scopes %v, rate limit %+v; want 1h, 4, [devices:list], none", u.IdleTimeout, u.Version, u.Scopes, u.RateLimit)
	}
	u, err = s.UpdateUser(t.Context(), "old-user", func(u *policy.APIUser) error {
		u.RateLimit = policy.RateLimit{Requests: 10, Window: time.Minute}
		return nil
	})
	if err != nil || u.RateLimit.Requests != 10 || u.RateLimit.Window != time.Minute {
		t.Fatalf("giving the upgraded user a rate limit: %+v, %v", u, err)
	}
	if err := s.Check(t.Context()); err != nil {
		t.Fatalf("integrity check after the upgrade: %v", err)
	}
}
