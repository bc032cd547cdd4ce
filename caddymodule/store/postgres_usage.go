package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

var _ UsageStore = (*Postgres)(nil)

// None of these writes takes the store's write lock: they change no user,
// role, org or product, and append no change record. Usage buckets are
// shared by the nodes, which add to them with one upsert per table and
// batch, in key order, so that nodes flushing at once take the rows' locks
// in the same order and cannot deadlock. Counters are each node's own
// rows, so no node waits for another's.

// AddUsage implements UsageStore.
func (s *Postgres) AddUsage(ctx context.Context, counts []UsageCount) error {
	hourly, daily, err := usageBuckets(counts)
	if err != nil || len(hourly) == 0 {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, t := range []struct {
			table string
			rows  []usageRow
		}{{"usage_hourly", hourly}, {"usage_daily", daily}} {
			n := len(t.rows)
			users, endpoints, outcomes := make([]string, n), make([]string, n), make([]string, n)
			starts, lastAts := make([]time.Time, n), make([]pgtype.Timestamptz, n)
			cnts := make([]int64, n)
			for i, r := range t.rows {
				users[i], starts[i], endpoints[i], outcomes[i], cnts[i], lastAts[i] = r.userID, r.start, r.endpoint, r.outcome, r.count, pgTimestamptz(r.lastAt)
			}
			// GREATEST ignores NULLs: a missing last_at never wins over
			// one that is set.
			b.Queue(`INSERT INTO `+t.table+` AS b (user_id, start, endpoint, outcome, count, last_at)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[], $6::timestamptz[])
ON CONFLICT (user_id, start, endpoint, outcome) DO UPDATE SET
	count = b.count + excluded.count,
	last_at = GREATEST(b.last_at, excluded.last_at)`, users, starts, endpoints, outcomes, cnts, lastAts)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("adding %d usage counts to %s: %w", len(counts), s.where, err)
		}
		return nil
	})
}

// Usage implements UsageStore.
func (s *Postgres) Usage(ctx context.Context, q UsageQuery) ([]UsageBucket, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT start, endpoint, outcome, count, last_at FROM `+usageTable(q.Granularity)+`
WHERE user_id = $1 AND start >= $2 AND start < $3
ORDER BY start, endpoint, outcome`, q.UserID, q.From.UTC(), q.To.UTC())
	if err != nil {
		return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
	}
	defer rows.Close()
	var buckets []UsageBucket
	for rows.Next() {
		var b UsageBucket
		var lastAt pgtype.Timestamptz
		if err := rows.Scan(&b.Start, &b.Endpoint, &b.Outcome, &b.Count, &lastAt); err != nil {
			return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
		}
		b.Start = b.Start.UTC()
		b.LastAt = pgDecodeTime(lastAt)
		buckets = append(buckets, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
	}
	return buckets, nil
}

// TopUsers implements UsageStore.
func (s *Postgres) TopUsers(ctx context.Context, q TopUsageQuery) ([]UserUsage, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	query := `SELECT g.user_id,
	coalesce(sum(g.count) FILTER (WHERE g.outcome = '` + OutcomeAllowed + `'), 0)::bigint,
	coalesce(sum(g.count) FILTER (WHERE g.outcome <> '` + OutcomeAllowed + `'), 0)::bigint,
	max(g.last_at)
FROM ` + usageTable(q.Granularity) + ` g JOIN users u ON u.id = g.user_id
WHERE u.org = $1 AND g.start >= $2 AND g.start < $3`
	args := []any{q.Org, q.From.UTC(), q.To.UTC()}
	if q.ProductSet {
		query += ` AND u.product = $4`
		args = append(args, q.Product)
	}
	query += `
GROUP BY g.user_id
ORDER BY sum(g.count) DESC, g.user_id`
	if q.Limit > 0 {
		query += fmt.Sprintf(` LIMIT $%d`, len(args)+1)
		args = append(args, q.Limit)
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
	}
	defer rows.Close()
	var users []UserUsage
	for rows.Next() {
		var u UserUsage
		var lastAt pgtype.Timestamptz
		if err := rows.Scan(&u.UserID, &u.Allowed, &u.Refused, &lastAt); err != nil {
			return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
		}
		u.LastAt = pgDecodeTime(lastAt)
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
	}
	return users, nil
}

// PruneUsage implements UsageStore.
func (s *Postgres) PruneUsage(ctx context.Context, hours, days time.Time) (int64, error) {
	if err := checkTime("pruning hourly usage", hours); err != nil {
		return 0, err
	}
	if err := checkTime("pruning daily usage", days); err != nil {
		return 0, err
	}
	var deleted int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		deleted = 0
		for _, p := range []struct {
			table  string
			before time.Time
		}{{"usage_hourly", hours}, {"usage_daily", days}} {
			if p.before.IsZero() {
				continue
			}
			tag, err := tx.Exec(ctx, `DELETE FROM `+p.table+` WHERE start < $1`, p.before.UTC())
			if err != nil {
				return fmt.Errorf("pruning usage in %s: %w", s.where, err)
			}
			deleted += tag.RowsAffected()
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// PutCounters implements UsageStore with one upsert of the whole batch,
// which writes only the counts that rise, so repeating a flush leaves no
// dead rows behind.
func (s *Postgres) PutCounters(ctx context.Context, node string, counters []Counter) error {
	// The server keeps microseconds: two windows that differ by less are
	// one row, and must be merged as one.
	trunc := make([]Counter, len(counters))
	for i, c := range counters {
		c.Window = c.Window.Truncate(time.Microsecond)
		trunc[i] = c
	}
	merged, err := mergeCounters(node, trunc)
	if err != nil || len(merged) == 0 {
		return err
	}
	n := len(merged)
	kinds, keys := make([]string, n), make([]string, n)
	windows, cnts := make([]time.Time, n), make([]int64, n)
	for i, c := range merged {
		kinds[i], keys[i], windows[i], cnts[i] = c.Kind, c.Key, c.Window, c.Count
	}
	// changed_at is the server's clock as the row is written, close to the
	// commit: readers ask for what changed since their last read, less a
	// margin (SumCounters).
	if _, err := s.pool.Exec(ctx, `INSERT INTO usage_counters AS c (kind, key, window_at, node, count, changed_at)
SELECT k, key, w, $4, n, clock_timestamp() FROM unnest($1::text[], $2::text[], $3::timestamptz[], $5::bigint[]) AS u (k, key, w, n)
ON CONFLICT (kind, key, window_at, node) DO UPDATE SET count = excluded.count, changed_at = excluded.changed_at
WHERE c.count < excluded.count`, kinds, keys, windows, node, cnts); err != nil {
		return fmt.Errorf("putting %d counters of node %q in %s: %w", n, node, s.where, err)
	}
	return nil
}

// SumCounters implements UsageStore.
func (s *Postgres) SumCounters(ctx context.Context, since time.Time, except string, changedSince time.Time) ([]Counter, time.Time, error) {
	if err := checkTime("summing counters", since); err != nil {
		return nil, time.Time{}, err
	}
	if err := checkTime("summing counters", changedSince); err != nil {
		return nil, time.Time{}, err
	}
	if since.IsZero() {
		since = minTime
	}
	var changed any // NULL: every live window
	if !changedSince.IsZero() {
		changed = changedSince.UTC()
	}
	// The read time is the server's, the clock changed_at comes from, taken
	// before the sums: a row changed in between is read again next time.
	var readAt time.Time
	if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&readAt); err != nil {
		return nil, time.Time{}, fmt.Errorf("summing counters in %s: %w", s.where, err)
	}
	rows, err := s.pool.Query(ctx, `WITH changed AS (
	SELECT DISTINCT kind, key, window_at FROM usage_counters
	WHERE window_at >= $1 AND node <> $2 AND ($3::timestamptz IS NULL OR changed_at >= $3)
)
SELECT c.kind, c.key, c.window_at, sum(c.count)::bigint FROM usage_counters c
JOIN changed USING (kind, key, window_at)
WHERE c.node <> $2
GROUP BY c.kind, c.key, c.window_at
ORDER BY c.kind, c.key, c.window_at`, since.UTC(), except, changed)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("summing counters in %s: %w", s.where, err)
	}
	defer rows.Close()
	var counters []Counter
	for rows.Next() {
		var c Counter
		if err := rows.Scan(&c.Kind, &c.Key, &c.Window, &c.Count); err != nil {
			return nil, time.Time{}, fmt.Errorf("summing counters in %s: %w", s.where, err)
		}
		c.Window = c.Window.UTC()
		counters = append(counters, c)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("summing counters in %s: %w", s.where, err)
	}
	return counters, readAt.UTC(), nil
}

// PruneCounters implements UsageStore.
func (s *Postgres) PruneCounters(ctx context.Context, before time.Time) (int64, error) {
	if err := checkTime("pruning counters", before); err != nil {
		return 0, err
	}
	if before.IsZero() {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM usage_counters WHERE window_at < $1`, before.UTC())
	if err != nil {
		return 0, fmt.Errorf("pruning counters in %s: %w", s.where, err)
	}
	return tag.RowsAffected(), nil
}
