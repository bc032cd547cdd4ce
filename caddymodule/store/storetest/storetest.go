// Package storetest is the behaviour every store.Store must show, written
// once so that the SQLite store and the PostgreSQL store are held to the
// same contract: call Run from the implementation's tests with a function
// that opens a fresh, empty store.
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// Run runs the behaviour suite. open must return a new, empty store for
// each call; Run closes it when the subtest ends.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateGetRoundTrip", testCreateGetRoundTrip},
		{"CreateSetsVersionAndTimes", testCreateSetsVersionAndTimes},
		{"EmptyListsComeBackNil", testEmptyListsComeBackNil},
		{"ReturnedUsersAreCopies", testReturnedUsersAreCopies},
		{"CreateRefusals", testCreateRefusals},
		{"NotFound", testNotFound},
		{"TokenHashLookup", testTokenHashLookup},
		{"UpdateUser", testUpdateUser},
		{"UpdateUserRefusals", testUpdateUserRefusals},
		{"UpdateUserKeys", testUpdateUserKeys},
		{"DeleteUserRemovesKeys", testDeleteUserRemovesKeys},
		{"DeleteUserIf", testDeleteUserIf},
		{"TouchUsers", testTouchUsers},
		{"ListUsers", testListUsers},
		{"ListUsersFilterSortAndPage", testListUsersFilterSortAndPage},
		{"History", testHistory},
		{"Roles", testRoles},
		{"OrgsAndProducts", testOrgsAndProducts},
		{"InUse", testInUse},
		{"Changes", testChanges},
		{"ConcurrentUpdatesLoseNothing", testConcurrentUpdates},
		{"Check", testCheck},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// Orgs and Products are what Seed creates: the tenancy of the spec's example.
var (
	Orgs = []policy.Org{
		{ID: "acme", Slug: "acme-inc"},
		{ID: "globex"},
	}
	Products = []policy.Product{
		{ID: 1337, Slug: "my-product-v1", Org: "acme"},
		{ID: 4242, Slug: "other-product", Org: "acme"},
		{ID: 9001, Slug: "globex-tracker", Org: "globex"},
	}
)

// Seed puts Orgs and Products in s, which users need before they can be
// created.
func Seed(t testing.TB, s store.Store) {
	t.Helper()
	for _, o := range Orgs {
		if err := s.PutOrg(t.Context(), o); err != nil {
			t.Fatalf("PutOrg(%v): %v", o, err)
		}
	}
	for _, p := range Products {
		if err := s.PutProduct(t.Context(), p); err != nil {
			t.Fatalf("PutProduct(%v): %v", p, err)
		}
	}
}

// hash is a distinct hash per name.
func hash(name string) policy.Hash { return sha256.Sum256([]byte(name)) }

// instant is a time with microsecond precision (what every store keeps)
// in a zone other than UTC, so the suite sees that stores return UTC.
func instant(day int, usec int) time.Time {
	zone := time.FixedZone("UTC+2", 2*60*60)
	return time.Date(2031, time.March, day, 14, 30, 15, usec*1000, zone)
}

// FullUser is a user with every field set.
func FullUser(id string) *policy.APIUser {
	return &policy.APIUser{
		ID:                  id,
		FriendlyName:        "Fleet sync " + id,
		Description:         "Synchronises the fleet; owner: ops@example.com",
		Org:                 "acme",
		Product:             1337,
		Scopes:              []policy.Scope{"devices:list", "devices:get", "devices.function:call"},
		Roles:               []string{"viewer", "operator"},
		AllowedEndpoints:    []string{"list-devices", "get-device"},
		AllowProxiedUsers:   true,
		AllowedProxiedUsers: []string{"alice@example.com", "bob@example.com"},
		ResourceConstraints: map[string][]string{"device": {"0a1b2c", "3d4e5f"}, "event": {"temp"}},
		Retired:             true,
		ExpiresAt:           instant(20, 123456),
		IdleTimeout:         90*time.Minute + 15*time.Second,
		RateLimit:           policy.RateLimit{Requests: 120, Window: 90 * time.Second},
		Quota:               policy.Quota{Requests: 100_000, Period: policy.QuotaMonth},
		AllowedIPs:          []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:1::/48")},
		CreatedAt:           instant(1, 1),
		UpdatedAt:           instant(2, 999999),
		LastUsedAt:          instant(3, 500000),
		TokenHash:           hash(id + "/token"),
		TokenID:             "tok_" + id,
		SecretHash:          hash(id + "/secret"),
		Keys: []policy.Key{
			{ID: id + "-key-b", Hash: hash(id + "/key-b"), CreatedAt: instant(5, 42)},
			{ID: id + "-key-a", Hash: hash(id + "/key-a"), CreatedAt: instant(4, 7), ExpiresAt: instant(6, 0)},
		},
	}
}

// zeroFields names the fields of u that hold their zero value, but for
// Version, which the store sets.
func zeroFields(u *policy.APIUser) []string {
	v := reflect.ValueOf(u).Elem()
	var zero []string
	for i := range v.NumField() {
		if name := v.Type().Field(i).Name; name != "Version" && v.Field(i).IsZero() {
			zero = append(zero, name)
		}
	}
	return zero
}

// minimalUser is a user with only what a user needs.
func minimalUser(id, org string, product int64) *policy.APIUser {
	return &policy.APIUser{ID: id, Org: org, Product: product, CreatedAt: instant(1, 0)}
}

func create(t *testing.T, s store.Store, u *policy.APIUser) {
	t.Helper()
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser(%q): %v", u.ID, err)
	}
}

func get(t *testing.T, s store.Store, id string) *policy.APIUser {
	t.Helper()
	u, err := s.GetUser(t.Context(), id)
	if err != nil {
		t.Fatalf("GetUser(%q): %v", id, err)
	}
	return u
}

func lastChange(t *testing.T, s store.Store) int64 {
	t.Helper()
	seq, err := s.LastChange(t.Context())
	if err != nil {
		t.Fatalf("LastChange: %v", err)
	}
	return seq
}

// wantUser fails t unless got is want, field by field; times are compared
// as instants, and must come back in UTC.
func wantUser(t *testing.T, got, want *policy.APIUser) {
	t.Helper()
	if got == nil {
		t.Fatalf("got no user, want %q", want.ID)
	}
	for _, d := range diffUser(got, want) {
		t.Error(d)
	}
	checkUTC(t, got)
}

func diffUser(got, want *policy.APIUser) []string {
	g, w := reflect.ValueOf(normalize(got)).Elem(), reflect.ValueOf(normalize(want)).Elem()
	var diffs []string
	for i := range g.NumField() {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			diffs = append(diffs, fmt.Sprintf("user %q: %s = %#v, want %#v", want.ID, g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface()))
		}
	}
	return diffs
}

// normalize copies u with every time in UTC, so equal instants compare
// equal with reflect.DeepEqual.
func normalize(u *policy.APIUser) *policy.APIUser {
	c := u.Clone()
	for _, p := range []*time.Time{&c.ExpiresAt, &c.CreatedAt, &c.UpdatedAt, &c.LastUsedAt} {
		*p = utc(*p)
	}
	for i := range c.Keys {
		c.Keys[i].CreatedAt = utc(c.Keys[i].CreatedAt)
		c.Keys[i].ExpiresAt = utc(c.Keys[i].ExpiresAt)
	}
	return c
}

func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Round(0)
}

func checkUTC(t *testing.T, u *policy.APIUser) {
	t.Helper()
	times := map[string]time.Time{"ExpiresAt": u.ExpiresAt, "CreatedAt": u.CreatedAt, "UpdatedAt": u.UpdatedAt, "LastUsedAt": u.LastUsedAt}
	for _, k := range u.Keys {
		times["key "+k.ID+" CreatedAt"] = k.CreatedAt
		times["key "+k.ID+" ExpiresAt"] = k.ExpiresAt
	}
	for name, tm := range times {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("user %q: %s is in %v, want UTC", u.ID, name, tm.Location())
		}
	}
}

func testCreateGetRoundTrip(t *testing.T, s store.Store) {
	Seed(t, s)
	u := FullUser("fleet-sync")
	if zero := zeroFields(u); len(zero) > 0 {
		t.Fatalf("FullUser leaves %v zero: set every field, so that a driver that forgets a column fails this test", zero)
	}
	want := u.Clone()
	want.Version = 1
	create(t, s, u)
	if u.Version != 1 {
		t.Errorf("CreateUser set Version = %d, want 1", u.Version)
	}
	wantUser(t, get(t, s, "fleet-sync"), want)

	m := minimalUser("org-level", "globex", 0)
	wantMin := m.Clone()
	wantMin.Version = 1
	wantMin.UpdatedAt = m.CreatedAt
	create(t, s, m)
	got := get(t, s, "org-level")
	wantUser(t, got, wantMin)
	if !got.ExpiresAt.IsZero() || !got.LastUsedAt.IsZero() {
		t.Errorf("zero times came back as ExpiresAt %v, LastUsedAt %v", got.ExpiresAt, got.LastUsedAt)
	}
}

func testCreateSetsVersionAndTimes(t *testing.T, s store.Store) {
	Seed(t, s)
	before := time.Now().Add(-time.Second)
	u := &policy.APIUser{ID: "fresh", Org: "acme", Version: 41}
	create(t, s, u)
	after := time.Now().Add(time.Second)
	if u.Version != 1 {
		t.Errorf("Version = %d, want 1", u.Version)
	}
	if u.CreatedAt.Before(before) || u.CreatedAt.After(after) {
		t.Errorf("CreatedAt = %v, want about now", u.CreatedAt)
	}
	if !u.UpdatedAt.Equal(u.CreatedAt) {
		t.Errorf("UpdatedAt = %v, want CreatedAt %v", u.UpdatedAt, u.CreatedAt)
	}
	got := get(t, s, "fresh")
	// The times CreateUser set are the ones it stored, to the precision
	// the store keeps.
	if got.Version != 1 || !got.CreatedAt.Equal(u.CreatedAt) || !got.UpdatedAt.Equal(u.UpdatedAt) {
		t.Errorf("stored Version %d CreatedAt %v, want 1 and %v", got.Version, got.CreatedAt, u.CreatedAt)
	}
	// Times the caller set, to the nanosecond, come back from CreateUser as
	// a read returns them: whatever precision the store keeps, the user
	// CreateUser returns and the user GetUser returns are the same.
	precise := time.Date(2026, 5, 4, 3, 2, 1, 123456789, time.UTC)
	v := &policy.APIUser{ID: "precise", Org: "acme", CreatedAt: precise, UpdatedAt: precise, ExpiresAt: precise.Add(time.Hour),
		Keys: []policy.Key{{ID: "precise-key", Hash: hash("precise/key"), CreatedAt: precise, ExpiresAt: precise.Add(time.Minute)}}}
	create(t, s, v)
	stored := get(t, s, "precise")
	if !stored.CreatedAt.Equal(v.CreatedAt) || !stored.ExpiresAt.Equal(v.ExpiresAt) ||
		!stored.Keys[0].CreatedAt.Equal(v.Keys[0].CreatedAt) || !stored.Keys[0].ExpiresAt.Equal(v.Keys[0].ExpiresAt) {
		t.Errorf("CreateUser returned times %v / %v / %v / %v, a read returns %v / %v / %v / %v",
			v.CreatedAt, v.ExpiresAt, v.Keys[0].CreatedAt, v.Keys[0].ExpiresAt,
			stored.CreatedAt, stored.ExpiresAt, stored.Keys[0].CreatedAt, stored.Keys[0].ExpiresAt)
	}
	updated, err := s.UpdateUser(t.Context(), "precise", func(u *policy.APIUser) error {
		u.ExpiresAt = precise.Add(2 * time.Hour)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if again := get(t, s, "precise"); !again.ExpiresAt.Equal(updated.ExpiresAt) || !again.UpdatedAt.Equal(updated.UpdatedAt) {
		t.Errorf("UpdateUser returned expiry %v, update time %v; a read returns %v, %v", updated.ExpiresAt, updated.UpdatedAt, again.ExpiresAt, again.UpdatedAt)
	}
}

func testEmptyListsComeBackNil(t *testing.T, s store.Store) {
	Seed(t, s)
	u := minimalUser("empty", "acme", 0)
	u.Scopes = []policy.Scope{}
	u.Roles = []string{}
	u.AllowedEndpoints = []string{}
	u.AllowedProxiedUsers = []string{}
	u.Keys = []policy.Key{}
	u.ResourceConstraints = map[string][]string{}
	create(t, s, u)
	got := get(t, s, "empty")
	if got.Scopes != nil || got.Roles != nil || got.AllowedEndpoints != nil || got.AllowedProxiedUsers != nil || got.Keys != nil || got.ResourceConstraints != nil {
		t.Errorf("empty lists came back non-nil: %#v", got)
	}

	// A constraint key with no values is kept (it allows nothing), with a
	// nil list.
	if _, err := s.UpdateUser(t.Context(), "empty", func(u *policy.APIUser) error {
		u.ResourceConstraints = map[string][]string{"device": {}, "event": {"temp"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got = get(t, s, "empty")
	want := map[string][]string{"device": nil, "event": {"temp"}}
	if !reflect.DeepEqual(got.ResourceConstraints, want) {
		t.Errorf("ResourceConstraints = %#v, want %#v", got.ResourceConstraints, want)
	}
}

func testReturnedUsersAreCopies(t *testing.T, s store.Store) {
	Seed(t, s)
	u := FullUser("copied")
	create(t, s, u)
	want := get(t, s, "copied")

	// Changing what was passed in, or what came out, changes nothing
	// stored.
	u.Scopes[0] = "devices:update"
	u.Keys[0].ID = "changed"
	u.ResourceConstraints["device"][0] = "changed"
	for _, mutate := range []func(u *policy.APIUser){
		func(u *policy.APIUser) { u.Scopes[0] = "devices:update" },
		func(u *policy.APIUser) { u.Roles[0] = "admin" },
		func(u *policy.APIUser) { u.AllowedEndpoints[0] = "everything" },
		func(u *policy.APIUser) { u.AllowedProxiedUsers[0] = "mallory" },
		func(u *policy.APIUser) { u.ResourceConstraints["device"][0] = "changed" },
		func(u *policy.APIUser) { u.ResourceConstraints["new"] = []string{"x"} },
		func(u *policy.APIUser) { u.Keys[0].Hash = hash("forged") },
	} {
		got := get(t, s, "copied")
		mutate(got)
		listed, err := s.ListUsers(t.Context(), store.UserFilter{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(listed[0])
		wantUser(t, get(t, s, "copied"), want)
	}
	updated, err := s.UpdateUser(t.Context(), "copied", func(*policy.APIUser) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	updated.Keys[0].ID = "changed"
	if got := get(t, s, "copied"); got.Keys[0].ID == "changed" {
		t.Error("the user UpdateUser returned shares its keys with the store")
	}
}

func testCreateRefusals(t *testing.T, s store.Store) {
	Seed(t, s)
	create(t, s, FullUser("taken"))
	seq := lastChange(t, s)

	tests := []struct {
		name   string
		user   func() *policy.APIUser
		wantIs error // nil: any error will do
	}{
		{"same ID", func() *policy.APIUser { return minimalUser("taken", "acme", 0) }, store.ErrExists},
		{"same token hash", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.TokenHash = hash("taken/token")
			return u
		}, store.ErrExists},
		{"key ID of another user", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.Keys = []policy.Key{{ID: "taken-key-a", Hash: hash("x")}}
			return u
		}, store.ErrExists},
		{"unknown org", func() *policy.APIUser { return minimalUser("other", "initech", 0) }, store.ErrNotFound},
		{"unknown product", func() *policy.APIUser { return minimalUser("other", "acme", 777) }, store.ErrNotFound},
		{"product of another org", func() *policy.APIUser { return minimalUser("other", "globex", 1337) }, store.ErrNotFound},
		{"no ID", func() *policy.APIUser { return minimalUser("", "acme", 0) }, nil},
		{"no org", func() *policy.APIUser { return minimalUser("other", "", 0) }, nil},
		{"negative product", func() *policy.APIUser { return minimalUser("other", "acme", -1) }, nil},
		{"negative rate limit", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.RateLimit = policy.RateLimit{Requests: -1, Window: time.Minute}
			return u
		}, nil},
		{"rate limit without a window", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.RateLimit = policy.RateLimit{Requests: 10}
			return u
		}, nil},
		{"key without ID", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.Keys = []policy.Key{{Hash: hash("x")}}
			return u
		}, nil},
		{"key listed twice", func() *policy.APIUser {
			u := minimalUser("other", "acme", 0)
			u.Keys = []policy.Key{{ID: "k", Hash: hash("x")}, {ID: "k", Hash: hash("y")}}
			return u
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.user()
			err := s.CreateUser(t.Context(), u)
			if err == nil {
				t.Fatal("CreateUser succeeded, want an error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("CreateUser: %v, want errors.Is %v", err, tt.wantIs)
			}
			if u.Version != 0 {
				t.Errorf("a failed CreateUser set Version = %d", u.Version)
			}
		})
	}
	if n, err := s.CountUsers(t.Context()); err != nil || n != 1 {
		t.Errorf("CountUsers = %d, %v; want 1 after refused creates", n, err)
	}
	if got := lastChange(t, s); got != seq {
		t.Errorf("refused creates appended change records: LastChange %d, want %d", got, seq)
	}
	if _, err := s.GetUser(t.Context(), "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser(other) after refused creates: %v, want ErrNotFound", err)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, minimalUser("no-token", "acme", 0)) // has the zero token hash
	checks := map[string]error{}
	_, checks["GetUser"] = s.GetUser(ctx, "ghost")
	_, checks["UpdateUser"] = s.UpdateUser(ctx, "ghost", func(*policy.APIUser) error {
		t.Error("UpdateUser called fn for a user that does not exist")
		return nil
	})
	checks["DeleteUser"] = s.DeleteUser(ctx, "ghost")
	_, checks["UserIDByTokenHash"] = s.UserIDByTokenHash(ctx, hash("ghost"))
	_, checks["UserIDByTokenHash(zero)"] = s.UserIDByTokenHash(ctx, policy.Hash{})
	checks["DeleteRole"] = s.DeleteRole(ctx, "ghost")
	checks["DeleteOrg"] = s.DeleteOrg(ctx, "ghost")
	checks["DeleteProduct"] = s.DeleteProduct(ctx, 31337)
	for name, err := range checks {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}
	if seq := lastChange(t, s); seq == 0 {
		t.Error("LastChange = 0 after Seed and CreateUser")
	}
}

func testTokenHashLookup(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("holder"))
	create(t, s, FullUser("bystander"))
	lookup := func(h policy.Hash) (string, error) { return s.UserIDByTokenHash(ctx, h) }

	if id, err := lookup(hash("holder/token")); err != nil || id != "holder" {
		t.Fatalf("UserIDByTokenHash(old) = %q, %v; want holder", id, err)
	}
	// Replacing the token (as any privilege change does) retires the old
	// one at once.
	if _, err := s.UpdateUser(ctx, "holder", func(u *policy.APIUser) error {
		u.TokenHash, u.TokenID = hash("holder/token-2"), "tok-2"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if id, err := lookup(hash("holder/token")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old token still finds %q (%v), want ErrNotFound", id, err)
	}
	if id, err := lookup(hash("holder/token-2")); err != nil || id != "holder" {
		t.Errorf("UserIDByTokenHash(new) = %q, %v; want holder", id, err)
	}
	// Taking another user's token hash is refused.
	if _, err := s.UpdateUser(ctx, "bystander", func(u *policy.APIUser) error {
		u.TokenHash = hash("holder/token-2")
		return nil
	}); !errors.Is(err, store.ErrExists) {
		t.Errorf("UpdateUser taking another user's token hash: %v, want ErrExists", err)
	}
	// Clearing the token leaves the user with none, and two users may have
	// none.
	for _, id := range []string{"holder", "bystander"} {
		if _, err := s.UpdateUser(ctx, id, func(u *policy.APIUser) error {
			u.TokenHash, u.TokenID = policy.Hash{}, ""
			return nil
		}); err != nil {
			t.Fatalf("clearing the token of %q: %v", id, err)
		}
	}
	if id, err := lookup(hash("holder/token-2")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cleared token still finds %q (%v), want ErrNotFound", id, err)
	}
	if id, err := lookup(policy.Hash{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the zero hash finds %q (%v), want ErrNotFound", id, err)
	}
}

func testUpdateUser(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("changing"))
	seq := lastChange(t, s)
	start := time.Now().Truncate(time.Microsecond)

	var want *policy.APIUser
	got, err := s.UpdateUser(ctx, "changing", func(u *policy.APIUser) error {
		if u.Version != 1 {
			t.Errorf("fn saw Version %d, want 1", u.Version)
		}
		u.FriendlyName = "renamed"
		u.Description = "new description"
		u.Org, u.Product = "globex", 9001
		u.Scopes = []policy.Scope{"events:get"}
		u.Roles = nil
		u.AllowedEndpoints = []string{"get-events"}
		u.AllowProxiedUsers = false
		u.AllowedProxiedUsers = nil
		u.ResourceConstraints = map[string][]string{"event": {"a", "b"}}
		u.Retired = false
		u.ExpiresAt = time.Time{}
		u.IdleTimeout = 0
		u.RateLimit = policy.RateLimit{Requests: 7, Window: time.Hour}
		u.LastUsedAt = instant(9, 9)
		u.TokenHash, u.TokenID = hash("changing/token-2"), "tok-2"
		u.SecretHash = hash("changing/secret-2")
		want = u.Clone()
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	if got.Version != 2 {
		t.Errorf("Version = %d, want 2", got.Version)
	}
	if got.UpdatedAt.Before(start) || got.UpdatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("UpdatedAt = %v, want about now (after %v)", got.UpdatedAt, start)
	}
	want.Version, want.UpdatedAt = 2, got.UpdatedAt
	wantUser(t, got, want)
	wantUser(t, get(t, s, "changing"), want)

	changes, err := s.Changes(ctx, seq, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Kind != store.ChangeUser || changes[0].Key != "changing" {
		t.Errorf("UpdateUser appended %+v, want one user change for %q", changes, "changing")
	}

	// A second update sees the first and increments again.
	got, err = s.UpdateUser(ctx, "changing", func(u *policy.APIUser) error {
		if u.FriendlyName != "renamed" || u.Version != 2 {
			t.Errorf("fn saw %q version %d, want the first update's result", u.FriendlyName, u.Version)
		}
		return nil
	})
	if err != nil || got.Version != 3 {
		t.Errorf("second UpdateUser: version %v, %v; want 3", got, err)
	}
}

func testUpdateUserRefusals(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("stable"))
	before := get(t, s, "stable")
	seq := lastChange(t, s)

	errVeto := errors.New("the operator said no")
	tests := []struct {
		name   string
		fn     func(u *policy.APIUser) error
		wantIs error // nil: any error will do
	}{
		{"fn error", func(u *policy.APIUser) error {
			u.Scopes = append(u.Scopes, "devices:update")
			u.Keys = nil
			return fmt.Errorf("checking the change: %w", errVeto)
		}, errVeto},
		{"ID change", func(u *policy.APIUser) error { u.ID = "renamed"; return nil }, nil},
		{"unknown org", func(u *policy.APIUser) error { u.Org, u.Product = "initech", 0; return nil }, store.ErrNotFound},
		{"product of another org", func(u *policy.APIUser) error { u.Product = 9001; return nil }, store.ErrNotFound},
		{"no org", func(u *policy.APIUser) error { u.Org = ""; return nil }, nil},
		{"key listed twice", func(u *policy.APIUser) error { u.Keys = append(u.Keys, u.Keys[0]); return nil }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.UpdateUser(ctx, "stable", tt.fn)
			if err == nil {
				t.Fatalf("UpdateUser succeeded with %+v, want an error", got)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("UpdateUser: %v, want errors.Is %v", err, tt.wantIs)
			}
			wantUser(t, get(t, s, "stable"), before)
		})
	}
	if _, err := s.GetUser(ctx, "renamed"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser(renamed): %v, want ErrNotFound", err)
	}
	if got := lastChange(t, s); got != seq {
		t.Errorf("refused updates appended change records: LastChange %d, want %d", got, seq)
	}
}

func testUpdateUserKeys(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	u := minimalUser("rotating", "acme", 0)
	u.Keys = []policy.Key{{ID: "key-a", Hash: hash("a"), CreatedAt: instant(1, 1)}}
	create(t, s, u)

	steps := []struct {
		name string
		fn   func(keys []policy.Key) []policy.Key
		want []string
	}{
		{"add B", func(k []policy.Key) []policy.Key {
			return append(k, policy.Key{ID: "key-b", Hash: hash("b"), CreatedAt: instant(2, 2)})
		}, []string{"key-a", "key-b"}},
		{"end A's overlap window", func(k []policy.Key) []policy.Key {
			k[0].ExpiresAt = instant(3, 3)
			return k
		}, []string{"key-a", "key-b"}},
		{"remove A", func(k []policy.Key) []policy.Key { return k[1:] }, []string{"key-b"}},
		{"add C first", func(k []policy.Key) []policy.Key {
			return append([]policy.Key{{ID: "key-c", Hash: hash("c")}}, k...)
		}, []string{"key-c", "key-b"}},
		{"change C's hash", func(k []policy.Key) []policy.Key { k[0].Hash = hash("c2"); return k }, []string{"key-c", "key-b"}},
		{"remove all", func([]policy.Key) []policy.Key { return nil }, nil},
		{"A again", func([]policy.Key) []policy.Key { return []policy.Key{{ID: "key-a", Hash: hash("a2")}} }, []string{"key-a"}},
	}
	for _, step := range steps {
		var want []policy.Key
		got, err := s.UpdateUser(ctx, "rotating", func(u *policy.APIUser) error {
			u.Keys = step.fn(u.Keys)
			want = slices.Clone(u.Keys)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var ids []string
		for _, k := range got.Keys {
			ids = append(ids, k.ID)
		}
		if !slices.Equal(ids, step.want) {
			t.Errorf("%s: keys %q, want %q", step.name, ids, step.want)
		}
		stored := get(t, s, "rotating")
		wantWhole := stored.Clone()
		wantWhole.Keys = want
		wantUser(t, stored, wantWhole)
	}
}

// testDeleteUserIf: the check sees the user as stored; a check that fails
// deletes nothing and records no change; one that passes deletes.
func testDeleteUserIf(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("conditional"))
	before := lastChange(t, s)
	refused := errors.New("not this one")
	var seen *policy.APIUser
	err := s.DeleteUserIf(ctx, "conditional", func(u *policy.APIUser) error {
		seen = u.Clone()
		return refused
	})
	if err != refused {
		t.Fatalf("DeleteUserIf with a failing check: %v, want the check's error as is", err)
	}
	if seen == nil || seen.ID != "conditional" || seen.Version != 1 || len(seen.Keys) != 2 {
		t.Fatalf("the check saw %+v, want the stored user with its keys", seen)
	}
	if got := get(t, s, "conditional"); got.Version != 1 {
		t.Fatalf("after a refused delete the user is at version %d", got.Version)
	}
	if after := lastChange(t, s); after != before {
		t.Errorf("a refused delete recorded a change (%d to %d)", before, after)
	}
	if err := s.DeleteUserIf(ctx, "conditional", func(*policy.APIUser) error { return nil }); err != nil {
		t.Fatalf("DeleteUserIf with a passing check: %v", err)
	}
	if _, err := s.GetUser(ctx, "conditional"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser after DeleteUserIf: %v, want ErrNotFound", err)
	}
	if err := s.DeleteUserIf(ctx, "conditional", func(*policy.APIUser) error { t.Error("check called for a missing user"); return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteUserIf of a missing user: %v, want ErrNotFound", err)
	}
}

func testDeleteUserRemovesKeys(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("leaving"))
	create(t, s, FullUser("staying"))
	if err := s.DeleteUser(ctx, "leaving"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	if _, err := s.GetUser(ctx, "leaving"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetUser after DeleteUser: %v, want ErrNotFound", err)
	}
	if _, err := s.UserIDByTokenHash(ctx, hash("leaving/token")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the deleted user's token still resolves: %v", err)
	}
	if err := s.DeleteUser(ctx, "leaving"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteUser: %v, want ErrNotFound", err)
	}
	// Its key IDs are free again, so its keys are gone.
	u := minimalUser("successor", "acme", 0)
	u.Keys = FullUser("leaving").Keys
	if err := s.CreateUser(ctx, u); err != nil {
		t.Errorf("creating a user with the deleted user's key IDs: %v (were its keys left behind?)", err)
	}
	if got := get(t, s, "staying"); len(got.Keys) != 2 {
		t.Errorf("another user's keys: %d, want 2", len(got.Keys))
	}
	// And the ID itself may be used again.
	create(t, s, minimalUser("leaving", "globex", 0))
}

func testTouchUsers(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	create(t, s, FullUser("busy"))
	create(t, s, minimalUser("idle", "acme", 0))
	before := get(t, s, "busy")
	seq := lastChange(t, s)

	touch := func(m map[string]time.Time) {
		t.Helper()
		if err := s.TouchUsers(ctx, m); err != nil {
			t.Fatalf("TouchUsers: %v", err)
		}
	}
	t1, t0, t2 := instant(10, 1), instant(9, 1), instant(11, 1)
	touch(map[string]time.Time{"busy": t1, "idle": t1, "ghost": t1})
	if got := get(t, s, "idle").LastUsedAt; !got.Equal(t1) {
		t.Errorf("idle LastUsedAt = %v, want %v", got, t1)
	}
	touch(map[string]time.Time{"busy": t0, "idle": time.Time{}})
	for _, id := range []string{"busy", "idle"} {
		if got := get(t, s, id).LastUsedAt; !got.Equal(t1) {
			t.Errorf("%s LastUsedAt = %v after an earlier or zero time, want it to stay %v", id, got, t1)
		}
	}
	touch(map[string]time.Time{"busy": t2})
	touch(nil)
	got := get(t, s, "busy")
	if !got.LastUsedAt.Equal(t2) {
		t.Errorf("LastUsedAt = %v, want %v", got.LastUsedAt, t2)
	}
	want := before.Clone()
	want.LastUsedAt = t2
	wantUser(t, got, want) // Version and UpdatedAt unchanged
	if got := lastChange(t, s); got != seq {
		t.Errorf("TouchUsers appended change records: LastChange %d, want %d", got, seq)
	}
}

func testListUsers(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	users := []*policy.APIUser{
		minimalUser("a-org", "acme", 0),
		FullUser("b-1337"), // acme, 1337, two keys
		minimalUser("c-4242", "acme", 4242),
		minimalUser("d-globex", "globex", 0),
		minimalUser("e-9001", "globex", 9001),
		minimalUser("f-1337", "acme", 1337),
		minimalUser("g-org", "acme", 0),
	}
	for _, u := range users {
		create(t, s, u)
	}
	if n, err := s.CountUsers(ctx); err != nil || n != int64(len(users)) {
		t.Errorf("CountUsers = %d, %v; want %d", n, err, len(users))
	}
	ids := func(us []*policy.APIUser) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	tests := []struct {
		filter store.UserFilter
		want   []string
	}{
		{store.UserFilter{}, []string{"a-org", "b-1337", "c-4242", "d-globex", "e-9001", "f-1337", "g-org"}},
		{store.UserFilter{Org: "acme"}, []string{"a-org", "b-1337", "c-4242", "f-1337", "g-org"}},
		{store.UserFilter{Org: "acme", ProductSet: true}, []string{"a-org", "g-org"}},
		{store.UserFilter{Org: "acme", ProductSet: true, Product: 1337}, []string{"b-1337", "f-1337"}},
		{store.UserFilter{ProductSet: true, Product: 9001}, []string{"e-9001"}},
		{store.UserFilter{ProductSet: true}, []string{"a-org", "d-globex", "g-org"}},
		{store.UserFilter{Product: 9001}, []string{"a-org", "b-1337", "c-4242", "d-globex", "e-9001", "f-1337", "g-org"}}, // Product without ProductSet is ignored
		{store.UserFilter{Org: "initech"}, nil},
		{store.UserFilter{After: "c-4242"}, []string{"d-globex", "e-9001", "f-1337", "g-org"}},
		{store.UserFilter{After: "c"}, []string{"c-4242", "d-globex", "e-9001", "f-1337", "g-org"}},
		{store.UserFilter{Limit: 2}, []string{"a-org", "b-1337"}},
		{store.UserFilter{Org: "acme", After: "b-1337", Limit: 2}, []string{"c-4242", "f-1337"}},
		{store.UserFilter{After: "g-org"}, nil},
	}
	for _, tt := range tests {
		got, err := s.ListUsers(ctx, tt.filter)
		if err != nil {
			t.Errorf("ListUsers(%+v): %v", tt.filter, err)
			continue
		}
		if !slices.Equal(ids(got), tt.want) {
			t.Errorf("ListUsers(%+v) = %q, want %q", tt.filter, ids(got), tt.want)
		}
	}

	// Listed users are whole, keys included.
	got, err := s.ListUsers(ctx, store.UserFilter{Org: "acme", ProductSet: true, Product: 1337, Limit: 1})
	if err != nil || len(got) != 1 {
		t.Fatalf("ListUsers: %v, %v", got, err)
	}
	wantUser(t, got[0], get(t, s, "b-1337"))

	// Paging with the cursor visits every user of a filter once.
	for _, f := range []store.UserFilter{{}, {Org: "acme"}, {ProductSet: true}} {
		var seen []string
		page := f
		page.Limit = 2
		for range 10 {
			us, err := s.ListUsers(ctx, page)
			if err != nil {
				t.Fatal(err)
			}
			if len(us) == 0 {
				break
			}
			seen = append(seen, ids(us)...)
			page.After = us[len(us)-1].ID
		}
		all, err := s.ListUsers(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seen, ids(all)) {
			t.Errorf("paging %+v saw %q, want %q", f, seen, ids(all))
		}
	}
}

func testRoles(t *testing.T, s store.Store) {
	ctx := t.Context()
	list := func() []store.Role {
		t.Helper()
		roles, err := s.ListRoles(ctx)
		if err != nil {
			t.Fatalf("ListRoles: %v", err)
		}
		return roles
	}
	if roles := list(); len(roles) != 0 {
		t.Errorf("a new store has roles %+v", roles)
	}
	put := func(r store.Role) {
		t.Helper()
		if err := s.PutRole(ctx, r); err != nil {
			t.Fatalf("PutRole(%+v): %v", r, err)
		}
	}
	put(store.Role{Name: "viewer", Description: "reads devices", Scopes: []string{"devices:list", "devices:get"}})
	put(store.Role{Name: "operator", Scopes: []string{"devices.function:call"}})
	put(store.Role{Name: "nothing", Scopes: []string{}})
	want := []store.Role{
		{Name: "nothing"},
		{Name: "operator", Scopes: []string{"devices.function:call"}},
		{Name: "viewer", Description: "reads devices", Scopes: []string{"devices:list", "devices:get"}},
	}
	if got := list(); !reflect.DeepEqual(got, want) {
		t.Errorf("ListRoles = %+v, want %+v", got, want)
	}
	put(store.Role{Name: "viewer", Description: "replaced", Scopes: []string{"events:get"}})
	want[2] = store.Role{Name: "viewer", Description: "replaced", Scopes: []string{"events:get"}}
	if got := list(); !reflect.DeepEqual(got, want) {
		t.Errorf("after replacing: ListRoles = %+v, want %+v", got, want)
	}
	if err := s.DeleteRole(ctx, "operator"); err != nil {
		t.Fatalf("DeleteRole: %v", err)
	}
	if err := s.DeleteRole(ctx, "operator"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteRole: %v, want ErrNotFound", err)
	}
	if got := list(); !reflect.DeepEqual(got, []store.Role{want[0], want[2]}) {
		t.Errorf("after deleting: ListRoles = %+v", got)
	}
	if err := s.PutRole(ctx, store.Role{}); err == nil {
		t.Error("PutRole accepted a role without a name")
	}
}

func testOrgsAndProducts(t *testing.T, s store.Store) {
	ctx := t.Context()
	Seed(t, s)
	orgs, err := s.ListOrgs(ctx)
	if err != nil || !reflect.DeepEqual(orgs, Orgs) {
		t.Errorf("ListOrgs = %+v, %v; want %+v", orgs, err, Orgs)
	}
	products, err := s.ListProducts(ctx)
	if err != nil || !reflect.DeepEqual(products, Products) {
		t.Errorf("ListProducts = %+v, %v; want %+v", products, err, Products)
	}

	// Put replaces.
	if err := s.PutOrg(ctx, policy.Org{ID: "globex", Slug: "globex-corp"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOrg(ctx, policy.Org{ID: "acme"}); err != nil { // drops the slug
		t.Fatal(err)
	}
	if err := s.PutProduct(ctx, policy.Product{ID: 4242, Slug: "renamed-product", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	orgs, _ = s.ListOrgs(ctx)
	if want := []policy.Org{{ID: "acme"}, {ID: "globex", Slug: "globex-corp"}}; !reflect.DeepEqual(orgs, want) {
		t.Errorf("after replacing: ListOrgs = %+v, want %+v", orgs, want)
	}
	products, _ = s.ListProducts(ctx)
	if products[1] != (policy.Product{ID: 4242, Slug: "renamed-product", Org: "acme"}) {
		t.Errorf("after replacing: product 4242 = %+v", products[1])
	}

	refusals := []struct {
		name   string
		err    error
		wantIs error // nil: any error will do
	}{
		{"org slug of another org", s.PutOrg(ctx, policy.Org{ID: "initech", Slug: "globex-corp"}), store.ErrExists},
		{"org slug that is another org's ID", s.PutOrg(ctx, policy.Org{ID: "initech", Slug: "acme"}), store.ErrExists},
		{"org ID that is another org's slug", s.PutOrg(ctx, policy.Org{ID: "globex-corp"}), store.ErrExists},
		{"org without ID", s.PutOrg(ctx, policy.Org{Slug: "x"}), nil},
		{"product slug of another product", s.PutProduct(ctx, policy.Product{ID: 5, Slug: "my-product-v1", Org: "acme"}), store.ErrExists},
		{"product of an unknown org", s.PutProduct(ctx, policy.Product{ID: 5, Org: "initech"}), store.ErrNotFound},
		{"product without ID", s.PutProduct(ctx, policy.Product{Org: "acme"}), nil},
		{"product with negative ID", s.PutProduct(ctx, policy.Product{ID: -5, Org: "acme"}), nil},
		{"product without org", s.PutProduct(ctx, policy.Product{ID: 5}), nil},
		{"product slug of digits", s.PutProduct(ctx, policy.Product{ID: 5, Slug: "1337", Org: "acme"}), nil},
	}
	for _, r := range refusals {
		if r.err == nil {
			t.Errorf("%s: accepted", r.name)
		} else if r.wantIs != nil && !errors.Is(r.err, r.wantIs) {
			t.Errorf("%s: %v, want errors.Is %v", r.name, r.err, r.wantIs)
		}
	}
	orgs, _ = s.ListOrgs(ctx)
	products, _ = s.ListProducts(ctx)
	if len(orgs) != 2 || len(products) != 3 {
		t.Errorf("refused puts wrote something: orgs %+v, products %+v", orgs, products)
	}

	// Several orgs and products may have no slug.
	if err := s.PutOrg(ctx, policy.Org{ID: "initech"}); err != nil {
		t.Errorf("a second org without a slug: %v", err)
	}
	if err := s.PutProduct(ctx, policy.Product{ID: 5, Org: "initech"}); err != nil {
		t.Errorf("a product without a slug: %v", err)
	}
	if err := s.PutProduct(ctx, policy.Product{ID: 6, Org: "initech"}); err != nil {
		t.Errorf("a second product without a slug: %v", err)
	}
}

func testInUse(t *testing.T, s store.Store) {
	ctx := t.Context()
	Seed(t, s)
	create(t, s, minimalUser("product-user", "acme", 1337))
	create(t, s, minimalUser("org-user", "globex", 0))
	seq := lastChange(t, s)

	refusals := map[string]error{
		"DeleteOrg with products":                s.DeleteOrg(ctx, "acme"),
		"DeleteProduct with users":               s.DeleteProduct(ctx, 1337),
		"PutProduct moving users to another org": s.PutProduct(ctx, policy.Product{ID: 1337, Slug: "my-product-v1", Org: "globex"}),
	}
	if err := s.DeleteProduct(ctx, 9001); err != nil {
		t.Fatalf("DeleteProduct(9001), which no user has: %v", err)
	}
	seq++
	refusals["DeleteOrg with users only"] = s.DeleteOrg(ctx, "globex")
	for name, err := range refusals {
		if !errors.Is(err, store.ErrInUse) {
			t.Errorf("%s: %v, want ErrInUse", name, err)
		}
	}
	if got := lastChange(t, s); got != seq {
		t.Errorf("refused deletes appended change records: LastChange %d, want %d", got, seq)
	}
	// A product no user of another org has may move.
	if err := s.PutProduct(ctx, policy.Product{ID: 4242, Org: "globex"}); err != nil {
		t.Errorf("moving product 4242, which no user has: %v", err)
	}

	// Once its users and products are gone, an org may go.
	for _, step := range []func() error{
		func() error { return s.DeleteUser(ctx, "product-user") },
		func() error { return s.DeleteProduct(ctx, 1337) },
		func() error { return s.DeleteOrg(ctx, "acme") },
		func() error { return s.DeleteUser(ctx, "org-user") },
		func() error { return s.DeleteProduct(ctx, 4242) },
		func() error { return s.DeleteOrg(ctx, "globex") },
	} {
		if err := step(); err != nil {
			t.Fatalf("cleaning up: %v", err)
		}
	}
	if orgs, err := s.ListOrgs(ctx); err != nil || len(orgs) != 0 {
		t.Errorf("ListOrgs = %+v, %v; want none", orgs, err)
	}
	if products, err := s.ListProducts(ctx); err != nil || len(products) != 0 {
		t.Errorf("ListProducts = %+v, %v; want none", products, err)
	}
}

func testChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	if seq := lastChange(t, s); seq != 0 {
		t.Errorf("a new store's LastChange = %d, want 0", seq)
	}
	if changes, err := s.Changes(ctx, 0, 0); err != nil || len(changes) != 0 {
		t.Errorf("a new store's Changes = %+v, %v", changes, err)
	}
	start := time.Now().Add(-time.Second)

	type change struct {
		kind store.ChangeKind
		key  string
	}
	var want []change
	do := func(kind store.ChangeKind, key string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s %s: %v", kind, key, err)
		}
		want = append(want, change{kind, key})
	}
	do(store.ChangeOrg, "acme", s.PutOrg(ctx, policy.Org{ID: "acme"}))
	do(store.ChangeProduct, "1337", s.PutProduct(ctx, policy.Product{ID: 1337, Org: "acme"}))
	do(store.ChangeRole, "viewer", s.PutRole(ctx, store.Role{Name: "viewer"}))
	do(store.ChangeUser, "u1", s.CreateUser(ctx, minimalUser("u1", "acme", 1337)))
	_, err := s.UpdateUser(ctx, "u1", func(u *policy.APIUser) error { u.Retired = true; return nil })
	do(store.ChangeUser, "u1", err)
	if err := s.TouchUsers(ctx, map[string]time.Time{"u1": time.Now()}); err != nil {
		t.Fatal(err)
	}
	do(store.ChangeUser, "u1", s.DeleteUser(ctx, "u1"))
	do(store.ChangeRole, "viewer", s.DeleteRole(ctx, "viewer"))
	do(store.ChangeProduct, "1337", s.DeleteProduct(ctx, 1337))
	do(store.ChangeOrg, "acme", s.DeleteOrg(ctx, "acme"))

	changes, err := s.Changes(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []change
	for i, c := range changes {
		got = append(got, change{c.Kind, c.Key})
		if i > 0 && c.Seq <= changes[i-1].Seq {
			t.Errorf("Seq %d follows %d", c.Seq, changes[i-1].Seq)
		}
		if c.At.Before(start) || c.At.After(time.Now().Add(time.Second)) || c.At.Location() != time.UTC {
			t.Errorf("change %d At = %v, want about now, in UTC", c.Seq, c.At)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Changes = %v, want %v", got, want)
	}
	last := changes[len(changes)-1].Seq
	if seq := lastChange(t, s); seq != last {
		t.Errorf("LastChange = %d, want %d", seq, last)
	}

	// Paging: after a Seq, at most limit.
	page, err := s.Changes(ctx, changes[2].Seq, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(page, changes[3:6]) {
		t.Errorf("Changes(after %d, 3) = %+v, want %+v", changes[2].Seq, page, changes[3:6])
	}
	if rest, err := s.Changes(ctx, last, 10); err != nil || len(rest) != 0 {
		t.Errorf("Changes after the last = %+v, %v", rest, err)
	}
}

// testConcurrentUpdates runs many read-modify-write updates of one user at
// once: every one must land (no lost update) and count once in Version.
func testConcurrentUpdates(t *testing.T, s store.Store) {
	Seed(t, s)
	create(t, s, minimalUser("contended", "acme", 0))
	const workers, each = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := strconv.Itoa(w) + "-" + strconv.Itoa(i)
				_, err := s.UpdateUser(t.Context(), "contended", func(u *policy.APIUser) error {
					u.Scopes = append(u.Scopes, policy.Scope("s"+name+":call"))
					u.Keys = append(u.Keys, policy.Key{ID: "k" + name, Hash: hash(name)})
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("update %s: %w", name, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	CheckAllUpdates(t, get(t, s, "contended"), workers*each)
}

// CheckAllUpdates checks that u holds the n scopes and n keys that n
// concurrent updates appended, and a Version that counted each once.
func CheckAllUpdates(t *testing.T, u *policy.APIUser, n int) {
	t.Helper()
	scopes := make(map[policy.Scope]bool)
	for _, sc := range u.Scopes {
		scopes[sc] = true
	}
	keys := make(map[string]bool)
	for _, k := range u.Keys {
		keys[k.ID] = true
	}
	if len(u.Scopes) != n || len(scopes) != n {
		t.Errorf("%d scopes (%d distinct) after %d updates, want %d", len(u.Scopes), len(scopes), n, n)
	}
	if len(u.Keys) != n || len(keys) != n {
		t.Errorf("%d keys (%d distinct) after %d updates, want %d", len(u.Keys), len(keys), n, n)
	}
	if u.Version != int64(1+n) {
		t.Errorf("Version = %d after %d updates, want %d", u.Version, n, 1+n)
	}
}

func testCheck(t *testing.T, s store.Store) {
	Seed(t, s)
	create(t, s, FullUser("checked"))
	if err := s.Check(t.Context()); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// testListUsersFilterSortAndPage checks the console's list: search, state
// (the rule of policy.Principal.Active), every sort in both directions, and
// that paging with the cursor of each order visits every user once.
func testListUsersFilterSortAndPage(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	now := instant(10, 0)
	mk := func(id, name string, createdDay int, mod func(u *policy.APIUser)) {
		u := minimalUser(id, "acme", 1337)
		u.FriendlyName = name
		u.CreatedAt = instant(createdDay, 0)
		if mod != nil {
			mod(u)
		}
		create(t, s, u)
	}
	mk("u-active", "Inventory Sync", 3, func(u *policy.APIUser) { u.LastUsedAt = instant(9, 0) })
	mk("u-retired", "billing", 1, func(u *policy.APIUser) { u.Retired = true; u.ExpiresAt = instant(2, 0) })
	mk("u-expired", "Zeta", 2, func(u *policy.APIUser) { u.ExpiresAt = instant(10, 0) }) // expires exactly now
	mk("u-idle", "alpha", 4, func(u *policy.APIUser) {
		u.IdleTimeout = 24 * time.Hour
		u.LastUsedAt = instant(8, 0) // idle for two days
	})
	mk("u-idle-new", "beta", 9, func(u *policy.APIUser) { u.IdleTimeout = 48 * time.Hour }) // never used, created a day ago
	mk("u-future", "Sync later", 5, func(u *policy.APIUser) { u.ExpiresAt = instant(11, 0) })
	create(t, s, minimalUser("other-team", "acme", 4242))

	team := store.UserFilter{Org: "acme", ProductSet: true, Product: 1337, Now: now}
	ids := func(f store.UserFilter) []string {
		t.Helper()
		us, err := s.ListUsers(ctx, f)
		if err != nil {
			t.Fatalf("ListUsers(%+v): %v", f, err)
		}
		var out []string
		for _, u := range us {
			out = append(out, u.ID)
		}
		return out
	}
	with := func(mod func(f *store.UserFilter)) store.UserFilter {
		f := team
		mod(&f)
		return f
	}
	tests := []struct {
		name   string
		filter store.UserFilter
		want   []string
	}{
		{"all", team, []string{"u-active", "u-expired", "u-future", "u-idle", "u-idle-new", "u-retired"}},
		{"q in name, any case", with(func(f *store.UserFilter) { f.Query = "SYNC" }), []string{"u-active", "u-future"}},
		{"q in id", with(func(f *store.UserFilter) { f.Query = "idle" }), []string{"u-idle", "u-idle-new"}},
		{"q matches nothing", with(func(f *store.UserFilter) { f.Query = "%" }), nil},
		{"active", with(func(f *store.UserFilter) { f.State = store.StateActive }), []string{"u-active", "u-future", "u-idle-new"}},
		{"retired wins over expired", with(func(f *store.UserFilter) { f.State = store.StateRetired }), []string{"u-retired"}},
		{"expired", with(func(f *store.UserFilter) { f.State = store.StateExpired }), []string{"u-expired"}},
		{"idle", with(func(f *store.UserFilter) { f.State = store.StateIdleExpired }), []string{"u-idle"}},
		{"active and q", with(func(f *store.UserFilter) { f.State = store.StateActive; f.Query = "sync" }), []string{"u-active", "u-future"}},
		{"by name, byte-wise", with(func(f *store.UserFilter) { f.Sort = store.SortName }), []string{"u-active", "u-future", "u-expired", "u-idle", "u-idle-new", "u-retired"}},
		{"by created", with(func(f *store.UserFilter) { f.Sort = store.SortCreated }), []string{"u-retired", "u-expired", "u-active", "u-idle", "u-future", "u-idle-new"}},
		{"by created, newest first", with(func(f *store.UserFilter) { f.Sort = store.SortCreated; f.Desc = true }), []string{"u-idle-new", "u-future", "u-idle", "u-active", "u-expired", "u-retired"}},
		{"by last used, never first", with(func(f *store.UserFilter) { f.Sort = store.SortLastUsed }), []string{"u-expired", "u-future", "u-idle-new", "u-retired", "u-idle", "u-active"}},
		{"by id, descending", with(func(f *store.UserFilter) { f.Desc = true }), []string{"u-retired", "u-idle-new", "u-idle", "u-future", "u-expired", "u-active"}},
	}
	for _, tt := range tests {
		if got := ids(tt.filter); !slices.Equal(got, tt.want) {
			t.Errorf("%s: ListUsers = %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := s.ListUsers(ctx, with(func(f *store.UserFilter) { f.State = "asleep" })); err == nil {
		t.Error("ListUsers with an unknown state: no error")
	}
	if _, err := s.ListUsers(ctx, with(func(f *store.UserFilter) { f.Sort = "height" })); err == nil {
		t.Error("ListUsers with an unknown sort: no error")
	}

	// Paging in every order, two at a time, with the cursor taken from the
	// last user of each page, visits exactly what one unpaged list does.
	for _, order := range []struct {
		sort store.UserSort
		desc bool
	}{{store.SortID, false}, {store.SortName, false}, {store.SortCreated, true}, {store.SortLastUsed, false}, {store.SortLastUsed, true}} {
		f := with(func(f *store.UserFilter) { f.Sort, f.Desc = order.sort, order.desc })
		want := ids(f)
		var seen []string
		page := f
		page.Limit = 2
		for range 10 {
			us, err := s.ListUsers(ctx, page)
			if err != nil {
				t.Fatal(err)
			}
			if len(us) == 0 {
				break
			}
			for _, u := range us {
				seen = append(seen, u.ID)
			}
			last := us[len(us)-1]
			page.After, page.AfterName = last.ID, last.FriendlyName
			switch order.sort {
			case store.SortCreated:
				page.AfterTime = last.CreatedAt
			case store.SortLastUsed:
				page.AfterTime = last.LastUsedAt
			}
		}
		if !slices.Equal(seen, want) {
			t.Errorf("paging by %q (desc %v) saw %q, want %q", order.sort, order.desc, seen, want)
		}
	}
}

// testHistory checks that a change made with a history note is recorded in
// its own transaction, newest first, with before and after, and that a
// refused change and a change without a note record nothing.
func testHistory(t *testing.T, s store.Store) {
	Seed(t, s)
	ctx := t.Context()
	view := func(u *policy.APIUser) ([]byte, error) {
		return []byte(fmt.Sprintf(`{"username": %q, "retired": %v}`, u.ID, u.Retired)), nil
	}
	note := func(action, detail string) context.Context {
		return store.WithHistory(ctx, store.HistoryNote{Actor: "alice", Action: action, Detail: detail, View: view})
	}
	if err := s.CreateUser(note("create_user", ""), minimalUser("h1", "acme", 0)); err != nil {
		t.Fatal(err)
	}
	create(t, s, minimalUser("h2", "acme", 0)) // no note: no history
	if _, err := s.UpdateUser(note("update_user", "k1"), "h1", func(u *policy.APIUser) error { u.Retired = true; return nil }); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	if _, err := s.UpdateUser(note("update_user", ""), "h1", func(u *policy.APIUser) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("refused update: %v", err)
	}
	if err := s.DeleteUserIf(note("delete_user", ""), "h1", func(u *policy.APIUser) error { return refused }); !errors.Is(err, refused) {
		t.Fatalf("refused delete: %v", err)
	}
	if err := s.DeleteUserIf(note("delete_user", ""), "h1", nil); err != nil {
		t.Fatal(err)
	}

	h, err := s.ListHistory(ctx, "h1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		action, detail, actor string
		before, after         string // the "retired" value each side shows, "" when absent
	}
	retired := func(b []byte) string {
		if b == nil {
			return ""
		}
		var v struct{ Retired bool }
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("history view %q is not JSON: %v", b, err)
		}
		return strconv.FormatBool(v.Retired)
	}
	var got []entry
	for _, e := range h {
		got = append(got, entry{e.Action, e.Detail, e.Actor, retired(e.Before), retired(e.After)})
		if e.UserID != "h1" || e.At.IsZero() || e.At.Location() != time.UTC {
			t.Errorf("entry %+v: want user h1 and a UTC time", e)
		}
	}
	want := []entry{
		{"delete_user", "", "alice", "true", ""},
		{"update_user", "k1", "alice", "false", "true"},
		{"create_user", "", "alice", "", "false"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("history = %+v, want %+v", got, want)
	}
	for i := 1; i < len(h); i++ {
		if h[i].Seq >= h[i-1].Seq {
			t.Errorf("history not newest first: seq %d after %d", h[i].Seq, h[i-1].Seq)
		}
	}
	if len(h) == 3 {
		older, err := s.ListHistory(ctx, "h1", h[0].Seq, 1)
		if err != nil || len(older) != 1 || older[0].Seq != h[1].Seq {
			t.Errorf("ListHistory(before %d, limit 1) = %+v, %v; want the update", h[0].Seq, older, err)
		}
	}
	if h2, err := s.ListHistory(ctx, "h2", 0, 0); err != nil || h2 != nil {
		t.Errorf("history of a user changed without a note = %+v, %v; want nil", h2, err)
	}
}
