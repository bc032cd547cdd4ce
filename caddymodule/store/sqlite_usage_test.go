package store_test

import (
	"path/filepath"
	"testing"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/storetest"
)

// TestSQLiteUsage runs the usage suite with n stores on one database file,
// as the gateway and the CLI, or two processes, open it.
func TestSQLiteUsage(t *testing.T) {
	storetest.RunUsage(t, func(t *testing.T, n int) []store.Store {
		path := filepath.Join(t.TempDir(), "users.db")
		stores := make([]store.Store, n)
		for i := range stores {
			stores[i] = openSQLite(t, path)
		}
		return stores
	})
}

func BenchmarkSQLiteAddUsage(b *testing.B) {
	s, err := store.OpenSQLite(filepath.Join(b.TempDir(), "users.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.BenchmarkAddUsage(b, s)
}
