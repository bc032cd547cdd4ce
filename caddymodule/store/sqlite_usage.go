package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

var _ UsageStore = (*SQLite)(nil)

// AddUsage implements UsageStore: one write transaction, a prepared upsert
// per table run once per bucket.
func (s *SQLite) AddUsage(ctx context.Context, counts []UsageCount) error {
	hourly, daily, err := usageBuckets(counts)
	if err != nil || len(hourly) == 0 {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := sqliteAddUsage(ctx, tx, "usage_hourly", hourly); err != nil {
			return err
		}
		return sqliteAddUsage(ctx, tx, "usage_daily", daily)
	})
}

func sqliteAddUsage(ctx context.Context, tx *sql.Tx, table string, rows []usageRow) error {
	// In DO UPDATE, a bare column is the stored row's. SQLite's max() of
	// a NULL is NULL, hence the coalesce: a missing last_at never wins
	// over one that is set.
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO `+table+` (user_id, start, endpoint, outcome, count, last_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (user_id, start, endpoint, outcome) DO UPDATE SET
	count = count + excluded.count,
	last_at = max(coalesce(last_at, excluded.last_at), coalesce(excluded.last_at, last_at))`)
	if err != nil {
		return fmt.Errorf("adding usage: %w", err)
	}
	defer stmt.Close()
	for _, r := range rows {
		var e encoder // the times were checked by usageBuckets
		if _, err := stmt.ExecContext(ctx, r.userID, r.start.UnixNano(), r.endpoint, r.outcome, r.count, e.time("", r.lastAt)); err != nil {
			return fmt.Errorf("adding the usage of API user %q: %w", r.userID, err)
		}
	}
	return nil
}

// Usage implements UsageStore.
func (s *SQLite) Usage(ctx context.Context, q UsageQuery) ([]UsageBucket, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT start, endpoint, outcome, count, last_at FROM `+usageTable(q.Granularity)+`
WHERE user_id = ? AND start >= ? AND start < ?
ORDER BY start, endpoint, outcome`, q.UserID, q.From.UnixNano(), q.To.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
	}
	defer rows.Close()
	var buckets []UsageBucket
	for rows.Next() {
		var b UsageBucket
		var start int64
		var lastAt sql.NullInt64
		if err := rows.Scan(&start, &b.Endpoint, &b.Outcome, &b.Count, &lastAt); err != nil {
			return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
		}
		b.Start = time.Unix(0, start).UTC()
		b.LastAt = decodeTime(lastAt)
		buckets = append(buckets, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the usage of API user %q: %w", q.UserID, err)
	}
	return buckets, nil
}

// TopUsers implements UsageStore.
func (s *SQLite) TopUsers(ctx context.Context, q TopUsageQuery) ([]UserUsage, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	query := `SELECT g.user_id,
	sum(CASE WHEN g.outcome = '` + OutcomeAllowed + `' THEN g.count ELSE 0 END),
	sum(CASE WHEN g.outcome = '` + OutcomeAllowed + `' THEN 0 ELSE g.count END),
	max(g.last_at)
FROM ` + usageTable(q.Granularity) + ` g JOIN users u ON u.id = g.user_id
WHERE u.org = ? AND g.start >= ? AND g.start < ?`
	args := []any{q.Org, q.From.UnixNano(), q.To.UnixNano()}
	if q.ProductSet {
		query += ` AND u.product = ?`
		args = append(args, q.Product)
	}
	query += `
GROUP BY g.user_id
ORDER BY sum(g.count) DESC, g.user_id`
	if q.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, q.Limit)
	}
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
	}
	defer rows.Close()
	var users []UserUsage
	for rows.Next() {
		var u UserUsage
		var lastAt sql.NullInt64
		if err := rows.Scan(&u.UserID, &u.Allowed, &u.Refused, &lastAt); err != nil {
			return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
		}
		u.LastAt = decodeTime(lastAt)
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ranking the users of org %q by usage: %w", q.Org, err)
	}
	return users, nil
}

// PruneUsage implements UsageStore.
func (s *SQLite) PruneUsage(ctx context.Context, hours, days time.Time) (int64, error) {
	if err := checkTime("pruning hourly usage", hours); err != nil {
		return 0, err
	}
	if err := checkTime("pruning daily usage", days); err != nil {
		return 0, err
	}
	var deleted int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		deleted = 0
		for _, p := range []struct {
			table  string
			before time.Time
		}{{"usage_hourly", hours}, {"usage_daily", days}} {
			if p.before.IsZero() {
				continue
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM `+p.table+` WHERE start < ?`, p.before.UnixNano())
			if err != nil {
				return fmt.Errorf("pruning usage: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("pruning usage: %w", err)
			}
			deleted += n
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}

// PutCounters implements UsageStore. The upsert writes only counts that
// rise, so repeating a flush costs no page writes.
func (s *SQLite) PutCounters(ctx context.Context, node string, counters []Counter) error {
	merged, err := mergeCounters(node, counters)
	if err != nil || len(merged) == 0 {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		// Under the write lock, so changed_at follows the order of commits.
		changedAt := s.now().UnixNano()
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO usage_counters (kind, key, window_at, node, count, changed_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (kind, key, window_at, node) DO UPDATE SET count = excluded.count, changed_at = excluded.changed_at
WHERE excluded.count > count`)
		if err != nil {
			return fmt.Errorf("putting the counters of node %q: %w", node, err)
		}
		defer stmt.Close()
		for _, c := range merged {
			if _, err := stmt.ExecContext(ctx, c.Kind, c.Key, c.Window.UnixNano(), node, c.Count, changedAt); err != nil {
				return fmt.Errorf("putting the %q counter of %q of node %q: %w", c.Kind, c.Key, node, err)
			}
		}
		return nil
	})
}

// SumCounters implements UsageStore.
func (s *SQLite) SumCounters(ctx context.Context, since time.Time, except string, changedSince time.Time) ([]Counter, time.Time, error) {
	if err := checkTime("summing counters", since); err != nil {
		return nil, time.Time{}, err
	}
	if err := checkTime("summing counters", changedSince); err != nil {
		return nil, time.Time{}, err
	}
	if since.IsZero() {
		since = minTime
	}
	readAt := s.now().UTC()
	q := `SELECT kind, key, window_at, sum(count) FROM usage_counters
WHERE window_at >= ?1 AND node <> ?2
GROUP BY kind, key, window_at
ORDER BY kind, key, window_at`
	args := []any{since.UnixNano(), except}
	if !changedSince.IsZero() {
		q = `SELECT c.kind, c.key, c.window_at, sum(c.count) FROM usage_counters c
JOIN (SELECT DISTINCT kind, key, window_at FROM usage_counters
	WHERE changed_at >= ?3 AND window_at >= ?1 AND node <> ?2) AS changed
	ON changed.kind = c.kind AND changed.key = c.key AND changed.window_at = c.window_at
WHERE c.node <> ?2
GROUP BY c.kind, c.key, c.window_at
ORDER BY c.kind, c.key, c.window_at`
		args = append(args, changedSince.UnixNano())
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("summing counters: %w", err)
	}
	defer rows.Close()
	var counters []Counter
	for rows.Next() {
		var c Counter
		var window int64
		if err := rows.Scan(&c.Kind, &c.Key, &window, &c.Count); err != nil {
			return nil, time.Time{}, fmt.Errorf("summing counters: %w", err)
		}
		c.Window = time.Unix(0, window).UTC()
		counters = append(counters, c)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("summing counters: %w", err)
	}
	return counters, readAt, nil
}

// PruneCounters implements UsageStore.
func (s *SQLite) PruneCounters(ctx context.Context, before time.Time) (int64, error) {
	if err := checkTime("pruning counters", before); err != nil {
		return 0, err
	}
	if before.IsZero() {
		return 0, nil
	}
	var deleted int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM usage_counters WHERE window_at < ?`, before.UnixNano())
		if err != nil {
			return fmt.Errorf("pruning counters: %w", err)
		}
		deleted, err = res.RowsAffected()
		if err != nil {
			return fmt.Errorf("pruning counters: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}
