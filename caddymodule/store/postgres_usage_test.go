package store_test

import (
	"testing"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/caddymodule/store/pgtest"
	"github.com/apiusers/caddy-api-users/caddymodule/store/storetest"
)

// testPostgresUsage runs the usage suite with n stores (n pools) on one
// database, as n gateway nodes share it.
func testPostgresUsage(t *testing.T, srv *pgtest.Server) {
	storetest.RunUsage(t, func(t *testing.T, n int) []store.Store {
		url := srv.NewSchema(t)
		stores := make([]store.Store, n)
		for i := range stores {
			stores[i] = openPostgres(t, url)
		}
		return stores
	})
}

func BenchmarkPostgresAddUsage(b *testing.B) {
	srv := pgtest.Start(b)
	s := openPostgres(b, srv.NewDatabase(b))
	defer s.Close()
	storetest.BenchmarkAddUsage(b, s)
}
