package caddymodule

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// flakyStore is a store whose database can be made unreachable, and which
// counts the reads the hot path makes.
type flakyStore struct {
	store.Store
	down  atomic.Bool
	reads atomic.Int64
}

var errUnreachable = errors.New("dial unix /run/postgresql/.s.PGSQL.5432: connect: connection refused")

func (f *flakyStore) LastChange(ctx context.Context) (int64, error) {
	if f.down.Load() {
		return 0, errUnreachable
	}
	return f.Store.LastChange(ctx)
}

func (f *flakyStore) Changes(ctx context.Context, after int64, limit int) ([]store.Change, error) {
	if f.down.Load() {
		return nil, errUnreachable
	}
	return f.Store.Changes(ctx, after, limit)
}

func (f *flakyStore) GetUser(ctx context.Context, id string) (*policy.APIUser, error) {
	f.reads.Add(1)
	if f.down.Load() {
		return nil, errUnreachable
	}
	return f.Store.GetUser(ctx, id)
}

func (f *flakyStore) UserIDByTokenHash(ctx context.Context, h policy.Hash) (string, error) {
	f.reads.Add(1)
	if f.down.Load() {
		return "", errUnreachable
	}
	return f.Store.UserIDByTokenHash(ctx, h)
}

// fakeClock is a.now for tests that move time by hand.
type fakeClock struct{ nanos atomic.Int64 }

func newFakeClock() *fakeClock {
	c := new(fakeClock)
	c.nanos.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.nanos.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.nanos.Add(int64(d)) }

// openSQLiteApp opens an app on a SQLite file, without its loops.
func openSQLiteApp(t *testing.T, path string, configure func(a *App)) *App {
	t.Helper()
	a := &App{
		Store: StoreConfig{Driver: "sqlite", Path: path},
		Orgs:  []OrgConfig{{ID: "acme", Products: []ProductConfig{{ID: 1337, Slug: "my-product-v1"}}}},
		Endpoints: []EndpointConfig{
			{Name: "list-devices", Methods: []string{"GET"}, Path: "/v1/products/{product}/devices", Scope: "devices:list"},
		},
	}
	if configure != nil {
		configure(a)
	}
	if err := a.open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Cleanup() })
	return a
}

func mustCreate(t *testing.T, a *App, scopes ...string) (*policy.APIUser, *Issued) {
	t.Helper()
	u, iss, err := a.CreateUser(context.Background(), Tenant{Org: "acme", Product: "1337"}, &UserSpec{Scopes: &scopes})
	if err != nil {
		t.Fatal(err)
	}
	return u, iss
}

// TestSyncDropsCacheWhenLogPruned: a node that had not read change records
// before they were pruned cannot know which users they changed, so it drops
// every cached user; a node that read them drops only the users changed.
func TestSyncDropsCacheWhenLogPruned(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "api_users.db")
	a := openSQLiteApp(t, path, nil)
	x, _ := mustCreate(t, a, "devices:list")
	y, _ := mustCreate(t, a, "devices:list")
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	// Another process changes X and then Y.
	other, err := store.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	change := func(id string) {
		t.Helper()
		if _, err := other.UpdateUser(ctx, id, func(u *policy.APIUser) error { u.Retired = !u.Retired; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	retired := func(id string) bool {
		t.Helper()
		cu, err := a.principal(ctx, id)
		if err != nil || cu == nil || cu.p == nil {
			t.Fatalf("principal(%s): %v, %v", id, cu, err)
		}
		return cu.p.User.Retired
	}

	// Read in time: only X's entry goes.
	retired(x.ID)
	epoch := a.cache.epoch.Load()
	change(x.ID)
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if !retired(x.ID) || a.cache.epoch.Load() != epoch {
		t.Fatalf("after reading X's change: retired %v, epoch %d (was %d); want X's entry dropped alone", retired(x.ID), a.cache.epoch.Load(), epoch)
	}

	// Pruned before it was read: X's second change is gone from the log,
	// and only Y's remains, so the node drops everything.
	change(x.ID) // not retired any more
	change(y.ID)
	if err := other.PruneChanges(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if a.cache.epoch.Load() == epoch {
		t.Error("the node skipped pruned change records without dropping its cache")
	}
	if retired(x.ID) {
		t.Error("the node still serves X as it was before a change it never read")
	}
	last, _ := other.LastChange(ctx)
	if a.lastSeq.Load() != last {
		t.Errorf("lastSeq = %d after the gap, want the log's end %d", a.lastSeq.Load(), last)
	}
}

// TestSyncDropsCacheWhenLogGoesBack: the store may be a restored backup, or
// a replica that lagged, whose log ends before what this node applied.
func TestSyncDropsCacheWhenLogGoesBack(t *testing.T) {
	ctx := context.Background()
	a := openSQLiteApp(t, filepath.Join(t.TempDir(), "api_users.db"), nil)
	mustCreate(t, a, "devices:list")
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	last := a.lastSeq.Load()
	a.lastSeq.Store(last + 100) // as if the backup lost 100 changes
	epoch := a.cache.epoch.Load()
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if a.cache.epoch.Load() == epoch || a.lastSeq.Load() != last {
		t.Errorf("epoch %d (was %d), lastSeq %d (want %d): want the cache dropped and the position reset", a.cache.epoch.Load(), epoch, a.lastSeq.Load(), last)
	}
	// Made again, the changes numbered as the lost ones are read.
	u, _ := mustCreate(t, a, "devices:list")
	if _, err := a.principal(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.syncChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if a.lastSeq.Load() != last+1 {
		t.Errorf("lastSeq %d after one more change, want %d", a.lastSeq.Load(), last+1)
	}
}

// TestStaleGrace takes the store away from a running node: a request that
// needs a store read fails at once without trying it, a cached user is
// admitted for max_stale after the last successful read and not a moment
// longer, and all is well again when the store is back.
func TestStaleGrace(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	const maxStale = 10 * time.Second
	a := openSQLiteApp(t, filepath.Join(t.TempDir(), "api_users.db"), func(a *App) {
		a.now = clock.now
		a.SyncInterval = caddy.Duration(10 * time.Millisecond)
		a.MaxStale = caddy.Duration(maxStale)
	})
	flaky := &flakyStore{Store: a.store}
	a.store = flaky
	_, cachedIss := mustCreate(t, a, "devices:list")
	_, uncachedIss := mustCreate(t, a, "devices:list")
	cached, uncached := policy.HashOf(cachedIss.Token), policy.HashOf(uncachedIss.Token)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	admits := func(h policy.Hash) error {
		cu, err := a.principalByToken(ctx, h)
		if err == nil && cu == nil {
			return errors.New("not found")
		}
		return err
	}
	// Once the follower has read the creations (which drop the users'
	// entries), the cached user is cached.
	last, err := flaky.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "catching up with the change log", func() bool { return a.lastSeq.Load() == last })
	if err := admits(cached); err != nil {
		t.Fatal(err)
	}

	flaky.down.Store(true)
	eventually(t, 5*time.Second, "noticing the outage", a.storeDown.Load)
	reads := flaky.reads.Load()
	if err := admits(uncached); !errors.Is(err, errStoreDown) {
		t.Errorf("an uncached user during the outage: %v, want errStoreDown", err)
	}
	if n := flaky.reads.Load() - reads; n != 0 {
		t.Errorf("the node tried %d store reads while it knew the store was down", n)
	}
	clock.advance(maxStale)
	if err := admits(cached); err != nil {
		t.Errorf("a cached user max_stale after the last read: %v, want it admitted", err)
	}
	clock.advance(time.Nanosecond)
	if err := admits(cached); !errors.Is(err, errStoreStale) || !strings.Contains(err.Error(), "10s ago") {
		t.Errorf("a cached user just after max_stale: %v, want errStoreStale", err)
	}

	flaky.down.Store(false)
	eventually(t, 5*time.Second, "recovery", func() bool { return !a.storeDown.Load() })
	for name, h := range map[string]policy.Hash{"cached": cached, "uncached": uncached} {
		if err := admits(h); err != nil {
			t.Errorf("the %s user after recovery: %v", name, err)
		}
	}
}

// TestMaxStaleDefaultsAndLimits checks MaxStale's default and its floor.
func TestMaxStaleDefaultsAndLimits(t *testing.T) {
	for _, tt := range []struct {
		sync, maxStale, want time.Duration
	}{
		{0, 0, 5 * time.Second},
		{50 * time.Millisecond, 0, 5 * time.Second},
		{2 * time.Second, 0, 20 * time.Second},
		{250 * time.Millisecond, time.Second, time.Second},
	} {
		a := openSQLiteApp(t, filepath.Join(t.TempDir(), "api_users.db"), func(a *App) {
			a.SyncInterval, a.MaxStale = caddy.Duration(tt.sync), caddy.Duration(tt.maxStale)
		})
		if got := time.Duration(a.MaxStale); got != tt.want {
			t.Errorf("sync_interval %v, max_stale %v: max_stale became %v, want %v", tt.sync, tt.maxStale, got, tt.want)
		}
	}
	a := &App{Store: StoreConfig{Path: filepath.Join(t.TempDir(), "x.db")}, SyncInterval: caddy.Duration(time.Second), MaxStale: caddy.Duration(1500 * time.Millisecond)}
	if err := a.open(context.Background()); err == nil || !strings.Contains(err.Error(), "twice sync_interval") {
		t.Errorf("max_stale below twice sync_interval: %v", err)
		a.Cleanup()
	}
}

// TestPruneChangesLoop: the app prunes change records older than
// change_retention when it starts, keeping the newer ones and the newest.
func TestPruneChangesLoop(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	a := openSQLiteApp(t, filepath.Join(t.TempDir(), "api_users.db"), func(a *App) {
		a.ChangeRetention = caddy.Duration(time.Hour)
	})
	mustCreate(t, a, "devices:list")
	mustCreate(t, a, "devices:list")
	before, err := a.store.Changes(ctx, 0, 0)
	if err != nil || len(before) < 3 {
		t.Fatalf("change log before pruning: %d records, %v", len(before), err)
	}
	// Two hours on, every record is past the retention: all but the
	// newest go, so LastChange does not move back.
	clock.advance(2 * time.Hour)
	a.now = clock.now
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	a.every(loopCtx, changePruneInterval, a.pruneChanges)
	go func() { a.wg.Wait(); close(done) }()
	var after []store.Change
	within(10*time.Second, func() bool {
		if after, err = a.store.Changes(ctx, 0, 0); err != nil {
			t.Fatal(err)
		}
		return len(after) == 1
	})
	cancel()
	<-done
	if len(after) != 1 || after[0].Seq != before[len(before)-1].Seq {
		t.Fatalf("after pruning: %+v; want only the newest record, seq %d", after, before[len(before)-1].Seq)
	}
}
