// Command apiusers-gen fills an API-user store with generated users, for
// measuring a gateway node with a million users in its store
// (scripts/scale.sh). Each user gets an access token, a Secret and one Key,
// like a user created through the management API, and the scopes given;
// the access tokens of the first -tokens-count users are written to the
// -tokens file, one per line, so a load client can present them. The
// others' credentials are random and thrown away.
//
// It writes in batches, one transaction each: prepared statements for
// SQLite, COPY for PostgreSQL. It is a benchmarking tool: it appends no
// change records, so run it before starting the nodes.
//
//	apiusers-gen -sqlite /tmp/scale/api_users.db -users 1000000 -tokens /tmp/scale/tokens.txt
//	apiusers-gen -postgres "$DATABASE_URL" -users 1000000 -tokens /tmp/scale/tokens.txt
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// bulkStore is what both stores offer for loading.
type bulkStore interface {
	store.Store
	BulkCreateUsers(ctx context.Context, users []*policy.APIUser) error
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("apiusers-gen: ")
	var (
		sqlitePath  = flag.String("sqlite", "", "SQLite database file to fill")
		postgresURL = flag.String("postgres", "", "PostgreSQL connection string of the database to fill (or set DATABASE_URL and pass -postgres env)")
		users       = flag.Int("users", 1_000_000, "how many users to create")
		batch       = flag.Int("batch", 50_000, "users per transaction")
		prefix      = flag.String("prefix", "gen-", "user ID prefix; IDs are the prefix and a 7-digit number")
		org         = flag.String("org", "acme", "org of the users (created if missing)")
		product     = flag.Int64("product", 1337, "product of the users, 0 for org-level users (created if missing)")
		slug        = flag.String("product-slug", "my-product-v1", "slug of the product, if it is created")
		scopes      = flag.String("scopes", "devices:list,devices:get", "scopes of every user, comma-separated")
		tokensPath  = flag.String("tokens", "", "file to write the access tokens of the first -tokens-count users to")
		tokensCount = flag.Int("tokens-count", 1000, "how many access tokens to write")
	)
	flag.Parse()
	if (*sqlitePath == "") == (*postgresURL == "") {
		log.Fatal("give one of -sqlite PATH or -postgres URL")
	}
	if *postgresURL == "env" {
		*postgresURL = os.Getenv("DATABASE_URL")
	}
	var sc []policy.Scope
	for _, s := range strings.Split(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sc = append(sc, policy.Scope(s))
		}
	}

	ctx := context.Background()
	var s bulkStore
	var err error
	if *sqlitePath != "" {
		s, err = store.OpenSQLite(*sqlitePath)
	} else {
		s, err = store.OpenPostgres(ctx, *postgresURL)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	if err := s.PutOrg(ctx, policy.Org{ID: *org}); err != nil && !errors.Is(err, store.ErrExists) {
		log.Fatal(err)
	}
	if *product != 0 {
		if err := s.PutProduct(ctx, policy.Product{ID: *product, Slug: *slug, Org: *org}); err != nil {
			log.Fatal(err)
		}
	}
	before, err := s.CountUsers(ctx)
	if err != nil {
		log.Fatal(err)
	}

	var tokens *bufio.Writer
	if *tokensPath != "" {
		f, err := os.OpenFile(*tokensPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		tokens = bufio.NewWriter(f)
		defer tokens.Flush()
	}

	start := time.Now()
	now := start.UTC().Truncate(time.Microsecond)
	for first := 0; first < *users; first += *batch {
		n := min(*batch, *users-first)
		us := make([]*policy.APIUser, n)
		for i := range us {
			id := fmt.Sprintf("%s%07d", *prefix, first+i)
			token, tokenHash := policy.NewToken()
			_, secretHash := policy.NewSecret()
			_, key := policy.NewKey(now)
			us[i] = &policy.APIUser{
				ID: id, FriendlyName: "generated " + id, Org: *org, Product: *product,
				Scopes: sc, CreatedAt: now,
				TokenHash: tokenHash, TokenID: policy.TokenIDOf(tokenHash), SecretHash: secretHash,
				Keys: []policy.Key{key},
			}
			if tokens != nil && first+i < *tokensCount {
				fmt.Fprintln(tokens, token)
			}
		}
		if err := s.BulkCreateUsers(ctx, us); err != nil {
			log.Fatalf("users %d to %d: %v", first, first+n-1, err)
		}
		done := first + n
		elapsed := time.Since(start)
		fmt.Fprintf(os.Stderr, "\r%d/%d users, %.0f users/s ", done, *users, float64(done)/elapsed.Seconds())
	}
	fmt.Fprintln(os.Stderr)
	total, err := s.CountUsers(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("created %d users in %v (%.0f users/s); the store now holds %d (%d before)\n",
		*users, time.Since(start).Round(time.Millisecond), float64(*users)/time.Since(start).Seconds(), total, before)
}
