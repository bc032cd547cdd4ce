package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apiusers/caddy-api-users/policy"
)

var (
	pgInsertUserSQL = func() string {
		binds := make([]string, len(userFields)+1)
		for i := range binds {
			binds[i] = fmt.Sprintf("$%d", i+1)
		}
		return "INSERT INTO users (" + userColumns("") + ") VALUES (" + strings.Join(binds, ", ") + ")"
	}()
	pgUpdateUserSQL = func() string {
		sets := make([]string, len(userFields))
		for i, f := range userFields {
			sets[i] = fmt.Sprintf("%s = $%d", f, i+1)
		}
		n := len(userFields)
		return fmt.Sprintf("UPDATE users SET %s WHERE id = $%d AND version = $%d", strings.Join(sets, ", "), n+1, n+2)
	}()

	// pgSelectUsers reads users with their keys in one statement, so what
	// it returns is one consistent snapshot without a transaction. The
	// keys come as arrays in each user's order.
	pgSelectUsers = "SELECT " + userColumns("u.") + `,
	k.ids, k.hashes, k.created, k.expires
FROM users u
CROSS JOIN LATERAL (
	SELECT array_agg(id ORDER BY pos) AS ids, array_agg(hash ORDER BY pos) AS hashes,
		array_agg(created_at ORDER BY pos) AS created, array_agg(expires_at ORDER BY pos) AS expires
	FROM keys WHERE keys.user_id = u.id
) k`
)

// pgScanUser reads one row of pgSelectUsers.
func pgScanUser(row pgx.Row) (*policy.APIUser, error) {
	var (
		r                      userRow[pgtype.Timestamptz]
		keyIDs                 []string
		keyHashes              [][]byte
		keyCreated, keyExpires []pgtype.Timestamptz
	)
	if err := row.Scan(append(r.dest(), &keyIDs, &keyHashes, &keyCreated, &keyExpires)...); err != nil {
		return nil, err
	}
	u, err := r.user(pgDecodeTime)
	if err != nil {
		return nil, err
	}
	if len(keyIDs) != len(keyHashes) || len(keyIDs) != len(keyCreated) || len(keyIDs) != len(keyExpires) {
		return nil, fmt.Errorf("reading the keys of API user %q: the key columns disagree in length", u.ID)
	}
	for i, id := range keyIDs {
		k := policy.Key{ID: id, CreatedAt: pgDecodeTime(keyCreated[i]), ExpiresAt: pgDecodeTime(keyExpires[i])}
		if k.Hash, err = decodeHash(fmt.Sprintf("key %q of API user %q", id, u.ID), keyHashes[i]); err != nil {
			return nil, err
		}
		u.Keys = append(u.Keys, k)
	}
	return u, nil
}

// pgGetUser reads one user with its keys; forUpdate also locks its row
// until the transaction ends.
func pgGetUser(ctx context.Context, q pgQuerier, id string, forUpdate bool) (*policy.APIUser, error) {
	query := pgSelectUsers + " WHERE u.id = $1"
	if forUpdate {
		query += " FOR UPDATE OF u"
	}
	u, err := pgScanUser(q.QueryRow(ctx, query, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("API user %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading API user %q: %w", id, err)
	}
	return u, nil
}

// pgCheckTenancy is checkTenancy in tx.
func pgCheckTenancy(ctx context.Context, tx pgx.Tx, u *policy.APIUser) error {
	return checkTenancy(u, func(org string) (bool, error) {
		var n int
		err := tx.QueryRow(ctx, `SELECT count(*) FROM orgs WHERE id = $1`, org).Scan(&n)
		return n > 0, err
	}, func(id int64) (string, error) {
		var org string
		err := tx.QueryRow(ctx, `SELECT org FROM products WHERE id = $1`, id).Scan(&org)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", ErrNotFound
		}
		return org, err
	})
}

// pgWriteKeys replaces a user's keys with keys, in their order, in one
// statement.
func pgWriteKeys(ctx context.Context, tx pgx.Tx, userID string, keys []policy.Key) error {
	if _, err := tx.Exec(ctx, `DELETE FROM keys WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("API user %q: replacing its keys: %w", userID, err)
	}
	if len(keys) == 0 {
		return nil
	}
	var e encoder
	ids := make([]string, len(keys))
	pos := make([]int32, len(keys))
	hashes := make([][]byte, len(keys))
	created := make([]pgtype.Timestamptz, len(keys))
	expires := make([]pgtype.Timestamptz, len(keys))
	for i, k := range keys {
		ids[i], pos[i] = k.ID, int32(i)
		if h := e.hash(k.Hash); h != nil {
			hashes[i] = h.([]byte)
		}
		created[i], expires[i] = pgTimestamptz(k.CreatedAt), pgTimestamptz(k.ExpiresAt)
	}
	_, err := tx.Exec(ctx, `INSERT INTO keys (id, user_id, pos, hash, created_at, expires_at)
		SELECT k.id, $1, k.pos, k.hash, k.created_at, k.expires_at
		FROM unnest($2::text[], $3::integer[], $4::bytea[], $5::timestamptz[], $6::timestamptz[])
			AS k (id, pos, hash, created_at, expires_at)`,
		userID, ids, pos, hashes, created, expires)
	if constraint, ok := isPgError(err, pgUniqueViolation); ok && constraint == "keys_pkey" {
		return fmt.Errorf("API user %q: one of its key IDs (%s) is another user's: %w", userID, strings.Join(ids, ", "), ErrExists)
	}
	if err != nil {
		return fmt.Errorf("API user %q: writing its keys: %w", userID, err)
	}
	return nil
}

// pgUserConflict explains a unique violation on the users table.
func pgUserConflict(u *policy.APIUser, err error) error {
	constraint, _ := isPgError(err, pgUniqueViolation)
	return userConflict(u, constraint == "users_token_hash_key")
}

// CreateUser implements Store.
func (s *Postgres) CreateUser(ctx context.Context, u *policy.APIUser) error {
	c, err := newUser(u, s.now)
	if err != nil {
		return err
	}
	pgTruncateTimes(c)
	args, err := userArgs(c, pgValues)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM users WHERE id = $1`, c.ID).Scan(&n); err != nil {
			return fmt.Errorf("creating API user %q: %w", c.ID, err)
		}
		if n > 0 {
			return fmt.Errorf("API user %q: %w", c.ID, ErrExists)
		}
		if err := pgCheckTenancy(ctx, tx, c); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, pgInsertUserSQL, append([]any{c.ID}, args...)...)
		if _, ok := isPgError(err, pgUniqueViolation); ok {
			return pgUserConflict(c, err)
		}
		if err != nil {
			return fmt.Errorf("creating API user %q: %w", c.ID, err)
		}
		if err := pgWriteKeys(ctx, tx, c.ID, c.Keys); err != nil {
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
	// The caller's user becomes what was stored, to the microsecond.
	*u = *c
	return nil
}

// pgTruncateTimes cuts u's times to the microsecond, as PostgreSQL keeps
// them, so that the user a write returns is the user a read returns: an
// entity tag or a comparison made from one holds for the other. The keys
// are copied, not changed in place.
func pgTruncateTimes(u *policy.APIUser) {
	u.ExpiresAt = u.ExpiresAt.Truncate(time.Microsecond)
	u.CreatedAt = u.CreatedAt.Truncate(time.Microsecond)
	u.UpdatedAt = u.UpdatedAt.Truncate(time.Microsecond)
	u.LastUsedAt = u.LastUsedAt.Truncate(time.Microsecond)
	keys := make([]policy.Key, len(u.Keys))
	for i, k := range u.Keys {
		k.CreatedAt = k.CreatedAt.Truncate(time.Microsecond)
		k.ExpiresAt = k.ExpiresAt.Truncate(time.Microsecond)
		keys[i] = k
	}
	if u.Keys != nil {
		u.Keys = keys
	}
}

// GetUser implements Store.
func (s *Postgres) GetUser(ctx context.Context, id string) (*policy.APIUser, error) {
	return pgGetUser(ctx, s.pool, id, false)
}

// UserIDByTokenHash implements Store. The zero hash, which users without a
// token have, matches nobody.
func (s *Postgres) UserIDByTokenHash(ctx context.Context, h policy.Hash) (string, error) {
	if h.IsZero() {
		return "", fmt.Errorf("access token: %w", ErrNotFound)
	}
	var id string
	err := s.pool.QueryRow(ctx, `SELECT id FROM users WHERE token_hash = $1`, h[:]).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("access token: %w", ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("looking up an access token: %w", err)
	}
	return id, nil
}

// ListUsers implements Store.
func (s *Postgres) ListUsers(ctx context.Context, f UserFilter) ([]*policy.APIUser, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var conds []string
	var args []any
	bind := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Org != "" {
		conds = append(conds, "u.org = "+bind(f.Org))
	}
	if f.ProductSet {
		conds = append(conds, "u.product = "+bind(f.Product))
	}
	if f.Query != "" {
		q := bind(f.Query)
		conds = append(conds, "(strpos(lower(u.id), lower("+q+")) > 0 OR strpos(lower(u.friendly_name), lower("+q+")) > 0)")
	}
	if f.State != "" {
		now := f.Now
		if now.IsZero() {
			now = s.now()
		}
		conds = append(conds, pgStateCond(f.State, func() string { return bind(now) }))
	}
	// The sort key, as the indexes of migration 0003 have it.
	key := ""
	var after any
	switch f.Sort {
	case SortName:
		key, after = `(u.friendly_name COLLATE "C")`, f.AfterName
	case SortCreated:
		key, after = "u.created_at", pgTime(f.AfterTime)
	case SortLastUsed:
		key, after = "coalesce(u.last_used_at, '-infinity')", pgtype.Timestamptz{Valid: true, InfinityModifier: pgtype.NegativeInfinity}
		if !f.AfterTime.IsZero() {
			after = pgTimestamptz(f.AfterTime)
		}
	}
	cursor, order := listOrder(&f, key, after, "u.id", bind)
	if cursor != "" {
		conds = append(conds, cursor)
	}
	q := pgSelectUsers
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY " + order
	if f.Limit > 0 {
		q += " LIMIT " + bind(f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing API users: %w", err)
	}
	defer rows.Close()
	var users []*policy.APIUser
	for rows.Next() {
		u, err := pgScanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("listing API users: %w", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing API users: %w", err)
	}
	return users, nil
}

// CountUsers implements Store.
func (s *Postgres) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting API users: %w", err)
	}
	return n, nil
}

// UpdateUser implements Store.
func (s *Postgres) UpdateUser(ctx context.Context, id string, fn func(u *policy.APIUser) error) (*policy.APIUser, error) {
	var stored *policy.APIUser
	err := s.write(ctx, func(tx pgx.Tx) error {
		// The write lock keeps other writers out, and FOR UPDATE keeps
		// TouchUsers from changing the row between this read and the
		// write below.
		u, err := pgGetUser(ctx, tx, id, true)
		if err != nil {
			return err
		}
		read := u.Version
		before, err := changeUser(u, id, fn)
		if err != nil {
			return err
		}
		if err := pgCheckTenancy(ctx, tx, u); err != nil {
			return err
		}
		u.Version = read + 1
		u.UpdatedAt = s.now()
		pgTruncateTimes(u)
		args, err := userArgs(u, pgValues)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, pgUpdateUserSQL, append(args, id, read)...)
		if _, ok := isPgError(err, pgUniqueViolation); ok {
			return pgUserConflict(u, err)
		}
		if err != nil {
			return fmt.Errorf("updating API user %q: %w", id, err)
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("API user %q changed while it was being updated: %w", id, ErrConflict)
		}
		if err := pgWriteKeys(ctx, tx, id, u.Keys); err != nil {
			return err
		}
		if err := s.appendChange(ctx, tx, ChangeUser, id); err != nil {
			return err
		}
		if stored, err = pgGetUser(ctx, tx, id, false); err != nil {
			return err
		}
		return s.appendHistory(ctx, tx, id, before, stored)
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// DeleteUser implements Store. Its keys go by ON DELETE CASCADE.
func (s *Postgres) DeleteUser(ctx context.Context, id string) error {
	return s.DeleteUserIf(ctx, id, nil)
}

// DeleteUserIf implements Store.
func (s *Postgres) DeleteUserIf(ctx context.Context, id string, check func(u *policy.APIUser) error) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var deleted *policy.APIUser
		if check != nil || hasHistoryNote(ctx) {
			u, err := pgGetUser(ctx, tx, id, true)
			if err != nil {
				return err
			}
			if err := checkDeletion(u, check); err != nil {
				return err
			}
			deleted = u
		}
		tag, err := tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("deleting API user %q: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
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

// TouchUsers implements Store. It does not take the write lock: it only
// moves last-used times forward, row by row. The rows are updated in ID
// order, one batch in one transaction, so two nodes flushing at once lock
// them in the same order and cannot deadlock.
func (s *Postgres) TouchUsers(ctx context.Context, lastUsed map[string]time.Time) error {
	ids := make([]string, 0, len(lastUsed))
	for id, t := range lastUsed {
		if !t.IsZero() {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	slices.Sort(ids)
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, id := range ids {
			b.Queue(`UPDATE users SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`,
				lastUsed[id].UTC(), id)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("recording the last-used times of %d API users: %w", len(ids), err)
		}
		return nil
	})
}

// pgStateCond is the condition that a user is in state at now (a bound
// timestamptz, bound when needed), policy.Principal.Active's rule in SQL: retired first, then
// expired, then idle since its last use or, never used, its creation.
func pgStateCond(state UserState, bindNow func() string) string {
	retired := "u.retired"
	if state == StateRetired {
		return retired
	}
	now := bindNow()
	expired := "(u.expires_at IS NOT NULL AND u.expires_at <= " + now + ")"
	idle := "(u.idle_timeout_ns > 0 AND greatest(coalesce(u.last_used_at, 'epoch'), coalesce(u.created_at, 'epoch')) + (u.idle_timeout_ns / 1000) * interval '1 microsecond' <= " + now + ")"
	return stateCond(state, retired, expired, idle)
}

// ListHistory implements Store.
func (s *Postgres) ListHistory(ctx context.Context, id string, before int64, limit int) ([]HistoryEntry, error) {
	if limit < 0 {
		return nil, fmt.Errorf("listing the history of API user %q: negative limit %d", id, limit)
	}
	q := `SELECT seq, user_id, at, actor, action, detail, before, after FROM user_history WHERE user_id = $1`
	args := []any{id}
	if before > 0 {
		args = append(args, before)
		q += ` AND seq < $2`
	}
	q += ` ORDER BY seq DESC`
	if limit > 0 {
		args = append(args, limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		var e HistoryEntry
		var at pgtype.Timestamptz
		if err := rows.Scan(&e.Seq, &e.UserID, &at, &e.Actor, &e.Action, &e.Detail, &e.Before, &e.After); err != nil {
			return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
		}
		e.At = pgDecodeTime(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the history of API user %q: %w", id, err)
	}
	return out, nil
}

// appendHistory adds the entry of a change, if ctx notes one, in the
// change's transaction.
func (s *Postgres) appendHistory(ctx context.Context, tx pgx.Tx, id string, before, after *policy.APIUser) error {
	e, err := historyEntry(ctx, id, s.now(), before, after)
	if e == nil || err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO user_history (user_id, at, actor, action, detail, before, after) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)`,
		id, e.At, e.Actor, e.Action, e.Detail, nullableText(e.Before), nullableText(e.After)); err != nil {
		return fmt.Errorf("recording the history of API user %q: %w", id, err)
	}
	return nil
}
