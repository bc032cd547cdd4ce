package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
	"github.com/apiusers/caddy-api-users/caddymodule/store/storetest"
	"github.com/apiusers/caddy-api-users/policy"
)

// bulkLoader is what both stores add for cmd/apiusers-gen.
type bulkLoader interface {
	store.Store
	BulkCreateUsers(ctx context.Context, users []*policy.APIUser) error
}

func TestSQLiteBulkCreateUsers(t *testing.T) {
	testBulk(t, openSQLite(t, filepath.Join(t.TempDir(), "users.db")))
}

func testPostgresBulk(t *testing.T, srv *pgtest.Server) {
	testBulk(t, openPostgres(t, srv.NewDatabase(t)))
}

// testBulk loads users and reads them back as CreateUser would have
// stored them.
func testBulk(t *testing.T, s bulkLoader) {
	defer s.Close()
	ctx := t.Context()
	storetest.Seed(t, s)
	seq, _ := s.LastChange(ctx)
	var users []*policy.APIUser
	for i := range 50 {
		u := storetest.FullUser(fmt.Sprintf("bulk-%02d", i))
		if i%2 == 0 {
			u.Keys = nil
			u.Product = 0
		}
		users = append(users, u)
	}
	if err := s.BulkCreateUsers(ctx, users); err != nil {
		t.Fatalf("BulkCreateUsers: %v", err)
	}
	for _, want := range []*policy.APIUser{users[0], users[1], users[49]} {
		got, err := s.GetUser(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != 1 || len(got.Keys) != len(want.Keys) || got.TokenHash != want.TokenHash || !got.ExpiresAt.Equal(want.ExpiresAt) {
			t.Errorf("%s came back as %+v, want %+v", want.ID, got, want)
		}
	}
	if n, err := s.CountUsers(ctx); err != nil || n != 50 {
		t.Errorf("CountUsers = %d, %v; want 50", n, err)
	}
	if id, err := s.UserIDByTokenHash(ctx, users[7].TokenHash); err != nil || id != users[7].ID {
		t.Errorf("UserIDByTokenHash = %q, %v", id, err)
	}
	if got, _ := s.LastChange(ctx); got != seq {
		t.Errorf("BulkCreateUsers appended change records: %d, want %d", got, seq)
	}
	// A batch with a taken ID, or an unknown org, writes nothing.
	taken := []*policy.APIUser{{ID: "fresh", Org: "acme"}, {ID: "bulk-03", Org: "acme"}}
	if err := s.BulkCreateUsers(ctx, taken); !errors.Is(err, store.ErrExists) {
		t.Errorf("BulkCreateUsers with a taken ID: %v, want ErrExists", err)
	}
	if err := s.BulkCreateUsers(ctx, []*policy.APIUser{{ID: "lost", Org: "initech"}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("BulkCreateUsers with an unknown org: %v, want ErrNotFound", err)
	}
	if _, err := s.GetUser(ctx, "fresh"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused batch wrote %q: %v", "fresh", err)
	}
	if err := s.Check(ctx); err != nil {
		t.Error(err)
	}
}
