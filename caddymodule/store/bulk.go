package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/apiusers/caddy-api-users/policy"
)

// Bulk loading fills a store fast, for the scale benchmark's million users
// (cmd/apiusers-gen). It is not part of Store, and it is not how users are
// managed: it inserts new users with their keys in one transaction per call,
// checks them as CreateUser does, but appends no change record per user.
// No node can hold a stale cache entry for a user that did not exist; at
// worst a node that saw one of the new IDs or tokens as unknown keeps
// refusing it for up to its cache's negative_ttl.

// prepareBulk checks users as CreateUser would and sets what it sets.
func prepareBulk(users []*policy.APIUser, now func() time.Time, orgs map[string]bool, products map[int64]string) error {
	at := now()
	for _, u := range users {
		if err := validateUser(u); err != nil {
			return err
		}
		if !orgs[u.Org] {
			return fmt.Errorf("API user %q: org %q: %w (create the org first)", u.ID, u.Org, ErrNotFound)
		}
		if org, ok := products[u.Product]; u.Product != 0 && (!ok || org != u.Org) {
			return fmt.Errorf("API user %q: product %d of org %q: %w (create the product first)", u.ID, u.Product, u.Org, ErrNotFound)
		}
		u.Version = 1
		if u.CreatedAt.IsZero() {
			u.CreatedAt = at
		}
		if u.UpdatedAt.IsZero() {
			u.UpdatedAt = u.CreatedAt
		}
	}
	return nil
}

// tenancyMaps lists the orgs and products of a store for prepareBulk.
func tenancyMaps(ctx context.Context, s Store) (map[string]bool, map[int64]string, error) {
	orgList, err := s.ListOrgs(ctx)
	if err != nil {
		return nil, nil, err
	}
	productList, err := s.ListProducts(ctx)
	if err != nil {
		return nil, nil, err
	}
	orgs := make(map[string]bool, len(orgList))
	for _, o := range orgList {
		orgs[o.ID] = true
	}
	products := make(map[int64]string, len(productList))
	for _, p := range productList {
		products[p.ID] = p.Org
	}
	return orgs, products, nil
}

// BulkCreateUsers inserts users (which must be new) and their keys in one
// transaction, with prepared statements.
func (s *SQLite) BulkCreateUsers(ctx context.Context, users []*policy.APIUser) error {
	orgs, products, err := tenancyMaps(ctx, s)
	if err != nil {
		return err
	}
	if err := prepareBulk(users, s.now, orgs, products); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		insertUser, err := tx.PrepareContext(ctx, insertUserSQL)
		if err != nil {
			return fmt.Errorf("bulk-creating API users: %w", err)
		}
		defer insertUser.Close()
		insertKey, err := tx.PrepareContext(ctx, `INSERT INTO keys (id, user_id, pos, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("bulk-creating API users: %w", err)
		}
		defer insertKey.Close()
		for _, u := range users {
			args, err := userArgs(u, sqliteValues)
			if err != nil {
				return err
			}
			if _, err := insertUser.ExecContext(ctx, append([]any{u.ID}, args...)...); err != nil {
				if isUniqueViolation(err) {
					return sqliteUserConflict(u, err)
				}
				return fmt.Errorf("bulk-creating API user %q: %w", u.ID, err)
			}
			for i, k := range u.Keys {
				var e encoder
				args := []any{k.ID, u.ID, i, e.hash(k.Hash), e.time("key creation time", k.CreatedAt), e.time("key expiry", k.ExpiresAt)}
				if e.err != nil {
					return fmt.Errorf("API user %q, key %q: %w", u.ID, k.ID, e.err)
				}
				if _, err := insertKey.ExecContext(ctx, args...); err != nil {
					if isUniqueViolation(err) {
						return fmt.Errorf("API user %q: key ID %q is another user's: %w", u.ID, k.ID, ErrExists)
					}
					return fmt.Errorf("bulk-creating API user %q: writing key %q: %w", u.ID, k.ID, err)
				}
			}
		}
		return nil
	})
}

// BulkCreateUsers inserts users (which must be new) and their keys in one
// transaction, with COPY.
func (s *Postgres) BulkCreateUsers(ctx context.Context, users []*policy.APIUser) error {
	orgs, products, err := tenancyMaps(ctx, s)
	if err != nil {
		return err
	}
	if err := prepareBulk(users, s.now, orgs, products); err != nil {
		return err
	}
	userRows := make([][]any, len(users))
	var keyRows [][]any
	for i, u := range users {
		args, err := userArgs(u, pgValues)
		if err != nil {
			return err
		}
		userRows[i] = append([]any{u.ID}, args...)
		for pos, k := range u.Keys {
			var e encoder
			keyRows = append(keyRows, []any{k.ID, u.ID, int32(pos), e.hash(k.Hash), pgTime(k.CreatedAt), pgTime(k.ExpiresAt)})
		}
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"users"}, append([]string{"id"}, userFields...), pgx.CopyFromRows(userRows)); err != nil {
			if _, ok := isPgError(err, pgUniqueViolation); ok {
				return fmt.Errorf("bulk-creating API users: an ID or token hash is taken: %w", ErrExists)
			}
			return fmt.Errorf("bulk-creating API users: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"keys"}, []string{"id", "user_id", "pos", "hash", "created_at", "expires_at"}, pgx.CopyFromRows(keyRows)); err != nil {
			if _, ok := isPgError(err, pgUniqueViolation); ok {
				return fmt.Errorf("bulk-creating API users: a key ID is taken: %w", ErrExists)
			}
			return fmt.Errorf("bulk-creating API users' keys: %w", err)
		}
		return nil
	})
}
