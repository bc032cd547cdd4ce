package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

var (
	sqliteUserColumns = userColumns("")
	insertUserSQL     = "INSERT INTO users (" + sqliteUserColumns + ") VALUES (?" + strings.Repeat(", ?", len(userFields)) + ")"
	updateUserSQL     = "UPDATE users SET " + strings.Join(userFields, " = ?, ") + " = ? WHERE id = ? AND version = ?"
	keyColumns        = "k.user_id, k.id, k.hash, k.created_at, k.expires_at"
)

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface{ Scan(dest ...any) error }

// scanUser reads one row of sqliteUserColumns, without keys.
func scanUser(row rowScanner) (*policy.APIUser, error) {
	var r userRow[sql.NullInt64]
	if err := row.Scan(r.dest()...); err != nil {
		return nil, err
	}
	return r.user(decodeTime)
}

// loadKeys reads the keys of the users that from (a FROM ... WHERE clause
// over keys k) selects, in each user's order, keyed by user ID.
func loadKeys(ctx context.Context, q querier, from string, args ...any) (map[string][]policy.Key, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+keyColumns+" "+from+" ORDER BY k.user_id, k.pos", args...)
	if err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	defer rows.Close()
	keys := make(map[string][]policy.Key)
	for rows.Next() {
		var (
			userID           string
			k                policy.Key
			hash             []byte
			created, expires sql.NullInt64
		)
		if err := rows.Scan(&userID, &k.ID, &hash, &created, &expires); err != nil {
			return nil, fmt.Errorf("reading keys: %w", err)
		}
		if k.Hash, err = decodeHash(fmt.Sprintf("key %q of API user %q", k.ID, userID), hash); err != nil {
			return nil, err
		}
		k.CreatedAt = decodeTime(created)
		k.ExpiresAt = decodeTime(expires)
		keys[userID] = append(keys[userID], k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	return keys, nil
}

// getUser reads one user with its keys.
func getUser(ctx context.Context, q querier, id string) (*policy.APIUser, error) {
	u, err := scanUser(q.QueryRowContext(ctx, "SELECT "+sqliteUserColumns+" FROM users WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		// The keys are read all the same, so that an unknown ID costs the
		// two queries a known one does, and the time a failed sign-in
		// takes does not say whether its user exists.
		_, _ = loadKeys(ctx, q, "FROM keys k WHERE k.user_id = ?", id)
		return nil, fmt.Errorf("API user %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading API user %q: %w", id, err)
	}
	keys, err := loadKeys(ctx, q, "FROM keys k WHERE k.user_id = ?", id)
	if err != nil {
		return nil, fmt.Errorf("reading API user %q: %w", id, err)
	}
	u.Keys = keys[id]
	return u, nil
}

// sqliteCheckTenancy is checkTenancy in tx.
func sqliteCheckTenancy(ctx context.Context, tx *sql.Tx, u *policy.APIUser) error {
	return checkTenancy(u, func(org string) (bool, error) {
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM orgs WHERE id = ?`, org).Scan(&n)
		return n > 0, err
	}, func(id int64) (string, error) {
		var org string
		err := tx.QueryRowContext(ctx, `SELECT org FROM products WHERE id = ?`, id).Scan(&org)
		if errors.Is(err, sql.ErrNoRows) {
			return "", ErrNotFound
		}
		return org, err
	})
}

// writeKeys replaces a user's keys with keys, in their order.
func writeKeys(ctx context.Context, tx *sql.Tx, userID string, keys []policy.Key) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE user_id = ?`, userID); err != nil {
		return fmt.Errorf("API user %q: replacing its keys: %w", userID, err)
	}
	for i, k := range keys {
		var e encoder
		args := []any{k.ID, userID, i, e.hash(k.Hash), e.time("key creation time", k.CreatedAt), e.time("key expiry", k.ExpiresAt)}
		if e.err != nil {
			return fmt.Errorf("API user %q, key %q: %w", userID, k.ID, e.err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO keys (id, user_id, pos, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`, args...)
		if isUniqueViolation(err) {
			return fmt.Errorf("API user %q: key ID %q is another user's: %w", userID, k.ID, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("API user %q: writing key %q: %w", userID, k.ID, err)
		}
	}
	return nil
}

// sqliteUserConflict explains a UNIQUE violation on the users table.
func sqliteUserConflict(u *policy.APIUser, err error) error {
	return userConflict(u, strings.Contains(err.Error(), "users.token_hash"))
}

// CreateUser implements Store.
func (s *SQLite) CreateUser(ctx context.Context, u *policy.APIUser) error {
	c, err := newUser(u, s.now)
	if err != nil {
		return err
	}
	args, err := userArgs(c, sqliteValues)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM users WHERE id = ?`, c.ID).Scan(&n); err != nil {
			return fmt.Errorf("creating API user %q: %w", c.ID, err)
		}
		if n > 0 {
			return fmt.Errorf("API user %q: %w", c.ID, ErrExists)
		}
		if err := sqliteCheckTenancy(ctx, tx, c); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, insertUserSQL, append([]any{c.ID}, args...)...)
		if isUniqueViolation(err) {
			return sqliteUserConflict(c, err)
		}
		if err != nil {
			return fmt.Errorf("creating API user %q: %w", c.ID, err)
		}
		if err := writeKeys(ctx, tx, c.ID, c.Keys); err != nil {
			return err
		}
		if err := s.appendHistory(ctx, tx, c.ID, nil, c); err != nil {
			return err
		}
		return s.appendChange(ctx, tx, ChangeUser, c.ID)
	})
	if err != nil {
		return err
	}
	u.Version, u.CreatedAt, u.UpdatedAt = c.Version, c.CreatedAt, c.UpdatedAt
	return nil
}

// GetUser implements Store.
func (s *SQLite) GetUser(ctx context.Context, id string) (*policy.APIUser, error) {
	var u *policy.APIUser
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = getUser(ctx, tx, id)
		return err
	})
	return u, err
}

// UserIDByTokenHash implements Store. The zero hash, which users without a
// token have, matches nobody.
func (s *SQLite) UserIDByTokenHash(ctx context.Context, h policy.Hash) (string, error) {
	if h.IsZero() {
		return "", fmt.Errorf("access token: %w", ErrNotFound)
	}
	var id string
	err := s.reader.QueryRowContext(ctx, `SELECT id FROM users WHERE token_hash = ?`, h[:]).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("access token: %w", ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("looking up an access token: %w", err)
	}
	return id, nil
}

// ListUsers implements Store.
func (s *SQLite) ListUsers(ctx context.Context, f UserFilter) ([]*policy.APIUser, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var conds []string
	var args []any
	bind := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("?%d", len(args))
	}
	if f.Org != "" {
		conds = append(conds, "org = "+bind(f.Org))
	}
	if f.ProductSet {
		conds = append(conds, "product = "+bind(f.Product))
	}
	if f.Query != "" {
		q := bind(f.Query)
		conds = append(conds, "(instr(lower(id), lower("+q+")) > 0 OR instr(lower(friendly_name), lower("+q+")) > 0)")
	}
	if f.State != "" {
		now := f.Now
		if now.IsZero() {
			now = s.now()
		}
		conds = append(conds, sqliteStateCond(f.State, now.UnixNano(), bind))
	}
	// The sort key, as the indexes of migration 0003 have it.
	key := ""
	var after any
	switch f.Sort {
	case SortName:
		key, after = "friendly_name", f.AfterName
	case SortCreated:
		key, after = "created_at", f.AfterTime.UnixNano()
	case SortLastUsed:
		key, after = "coalesce(last_used_at, 0)", int64(0)
		if !f.AfterTime.IsZero() {
			after = f.AfterTime.UnixNano()
		}
	}
	cursor, order := listOrder(&f, key, after, "id", bind)
	if cursor != "" {
		conds = append(conds, cursor)
	}
	selection := "FROM users"
	if len(conds) > 0 {
		selection += " WHERE " + strings.Join(conds, " AND ")
	}
	selection += " ORDER BY " + order
	if f.Limit > 0 {
		selection += " LIMIT " + bind(f.Limit)
	}

	var users []*policy.APIUser
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT "+sqliteUserColumns+" "+selection, args...)
		if err != nil {
			return fmt.Errorf("listing API users: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				return fmt.Errorf("listing API users: %w", err)
			}
			users = append(users, u)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("listing API users: %w", err)
		}
		if len(users) == 0 {
			return nil
		}
		keys, err := loadKeys(ctx, tx, "FROM keys k WHERE k.user_id IN (SELECT id "+selection+")", args...)
		if err != nil {
			return fmt.Errorf("listing API users: %w", err)
		}
		for _, u := range users {
			u.Keys = keys[u.ID]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// CountUsers implements Store.
func (s *SQLite) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting API users: %w", err)
	}
	return n, nil
}

// UpdateUser implements Store.
func (s *SQLite) UpdateUser(ctx context.Context, id string, fn func(u *policy.APIUser) error) (*policy.APIUser, error) {
	var stored *policy.APIUser
	err := s.write(ctx, func(tx *sql.Tx) error {
		// The write transaction began with BEGIN IMMEDIATE, so nobody can
		// change the user between this read and the write below.
		u, err := getUser(ctx, tx, id)
		if err != nil {
			return err
		}
		read := u.Version
		before, err := changeUser(u, id, fn)
		if err != nil {
			return err
		}
		if err := sqliteCheckTenancy(ctx, tx, u); err != nil {
			return err
		}
		u.Version = read + 1
		u.UpdatedAt = s.now()
		args, err := userArgs(u, sqliteValues)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, updateUserSQL, append(args, id, read)...)
		if isUniqueViolation(err) {
			return sqliteUserConflict(u, err)
		}
		if err != nil {
			return fmt.Errorf("updating API user %q: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("updating API user %q: %w", id, err)
		} else if n != 1 {
			return fmt.Errorf("API user %q changed while it was being updated: %w", id, ErrConflict)
		}
		if err := writeKeys(ctx, tx, id, u.Keys); err != nil {
			return err
		}
		if err := s.appendChange(ctx, tx, ChangeUser, id); err != nil {
			return err
		}
		if stored, err = getUser(ctx, tx, id); err != nil {
			return err
		}
		return s.appendHistory(ctx, tx, id, before, stored)
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// DeleteUser implements Store.
func (s *SQLite) DeleteUser(ctx context.Context, id string) error {
	return s.DeleteUserIf(ctx, id, nil)
}

// DeleteUserIf implements Store.
func (s *SQLite) DeleteUserIf(ctx context.Context, id string, check func(u *policy.APIUser) error) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var deleted *policy.APIUser
		if check != nil || hasHistoryNote(ctx) {
			// BEGIN IMMEDIATE keeps every other writer out until commit.
			u, err := getUser(ctx, tx, id)
			if err != nil {
				return err
			}
			if err := checkDeletion(u, check); err != nil {
				return err
			}
			deleted = u
		}
		// Keys go by ON DELETE CASCADE too; deleting them here keeps that
		// true even on a connection where foreign keys were left off.
		if _, err := tx.ExecContext(ctx, `DELETE FROM keys WHERE user_id = ?`, id); err != nil {
			return fmt.Errorf("deleting the keys of API user %q: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("deleting API user %q: %w", id, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("deleting API user %q: %w", id, err)
		} else if n == 0 {
			return fmt.Errorf("API user %q: %w", id, ErrNotFound)
		}
		if deleted != nil {
			if err := s.appendHistory(ctx, tx, id, deleted, nil); err != nil {
				return err
			}
		}
		return s.appendChange(ctx, tx, ChangeUser, id)
	})
}

// TouchUsers implements Store.
func (s *SQLite) TouchUsers(ctx context.Context, lastUsed map[string]time.Time) error {
	ids := make([]string, 0, len(lastUsed))
	for id, t := range lastUsed {
		if !t.IsZero() {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids) // a deterministic order, so a failure is reproducible
	return s.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE users SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
		if err != nil {
			return fmt.Errorf("recording last-used times: %w", err)
		}
		defer stmt.Close()
		for _, id := range ids {
			var e encoder
			at := e.time("last-used time", lastUsed[id])
			if e.err != nil {
				return fmt.Errorf("API user %q: %w", id, e.err)
			}
			if _, err := stmt.ExecContext(ctx, at, id); err != nil {
				return fmt.Errorf("recording the last-used time of API user %q: %w", id, err)
			}
		}
		return nil
	})
}

// sqliteStateCond is the condition that a user is in state at now (Unix
// nanoseconds), policy.Principal.Active's rule in SQL: retired first, then
// expired, then idle since its last use or, never used, its creation.
func sqliteStateCond(state UserState, now int64, bind func(any) string) string {
	retired := "retired = 1"
	expired := "(expires_at IS NOT NULL AND expires_at <= " + bind(now) + ")"
	idle := "(idle_timeout_ns > 0 AND max(coalesce(last_used_at, 0), coalesce(created_at, 0)) + idle_timeout_ns <= " + bind(now) + ")"
	return stateCond(state, retired, expired, idle)
}

// ListHistory implements Store.
func (s *SQLite) ListHistory(ctx context.Context, id string, before int64, limit int) ([]HistoryEntry, error) {
	if limit < 0 {
		return nil, fmt.Errorf("listing the history of API user %q: negative limit %d", id, limit)
	}
	q := `SELECT seq, user_id, at, actor, action, detail, before, after FROM user_history WHERE user_id = ?`
	args := []any{id}
	if before > 0 {
		q += ` AND seq < ?`
		args = append(args, before)
	}
	q += ` ORDER BY seq DESC`
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		var e HistoryEntry
		var at int64
		var b, a sql.NullString
		if err := rows.Scan(&e.Seq, &e.UserID, &at, &e.Actor, &e.Action, &e.Detail, &b, &a); err != nil {
			return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
		}
		e.At = time.Unix(0, at).UTC()
		if b.Valid {
			e.Before = []byte(b.String)
		}
		if a.Valid {
			e.After = []byte(a.String)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
	}
	return out, nil
}

// appendHistory adds the entry of a change, if ctx notes one, in the
// change's transaction.
func (s *SQLite) appendHistory(ctx context.Context, tx *sql.Tx, id string, before, after *policy.APIUser) error {
	e, err := historyEntry(ctx, id, s.now(), before, after)
	if e == nil || err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO user_history (user_id, at, actor, action, detail, before, after) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		id, e.At.UnixNano(), e.Actor, e.Action, e.Detail, nullableText(e.Before), nullableText(e.After)); err != nil {
		return fmt.Errorf("recording the history of API user %q: %w", id, err)
	}
	return nil
}
