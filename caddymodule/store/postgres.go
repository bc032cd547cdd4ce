package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// Postgres is the Store that several gateway nodes share. Every node, and
// the CLI, opens the same database; each change is committed with a record
// in the changes table and announced with NOTIFY in the same transaction, so
// the other nodes drop the affected cache entries within milliseconds (see
// ListenChanges), or at their next poll of the change log if a notification
// is lost.
//
// It talks to the server through pgxpool directly rather than through
// database/sql: pgx maps timestamptz, bytea, jsonb and arrays to Go types
// without database/sql's conversions, reads a user and its keys in one
// statement (one round trip on a cache miss), bulk-loads with COPY, and its
// LISTEN connection is a plain pgx.Conn. Only the shared migrator, which is
// written against database/sql, gets a database/sql view of the same pool.
//
// Writers are serialized by a transaction-scoped advisory lock, taken first
// in every transaction that appends a change record. Management writes are
// rare, so this costs little, and it buys what SQLite's single writer gives
// the SQLite store: a read-modify-write (UpdateUser, the tenancy checks of
// CreateUser and DeleteProduct) acts on what is committed, two nodes
// changing one user at once lose neither change, and change records get
// gapless sequence numbers in commit order (see migrations/postgres). The
// user row is also read FOR UPDATE, so that TouchUsers, which does not take
// the lock, cannot be undone by a concurrent UpdateUser.
type Postgres struct {
	pool  *pgxpool.Pool
	where string // the server and database, without the password, for messages
	now   func() time.Time
}

var (
	_ Store          = (*Postgres)(nil)
	_ ChangeListener = (*Postgres)(nil)
)

const (
	// writeLockKey is the advisory lock that serializes writers ("api_user"
	// in ASCII), migrateLockKey the one that serializes migrations
	// ("api_migr").
	writeLockKey   int64 = 0x6170695f75736572
	migrateLockKey int64 = 0x6170695f6d696772

	// ChangesChannel is the channel change records are announced on; the
	// payload is the record's sequence number.
	ChangesChannel = "api_users_changes"

	// defaultConnectTimeout bounds a connection attempt when the connection
	// string sets no connect_timeout, so a request or a poll never waits
	// for an unreachable server for the operating system's TCP timeout.
	defaultConnectTimeout = 5 * time.Second
)

// postgresMigrations applies migrations/postgres.
var postgresMigrations = migrator{
	fsys: migrationFiles,
	dir:  "migrations/postgres",
	bind: func(n int) string { return "$" + strconv.Itoa(n) },
	lock: "SELECT pg_advisory_xact_lock(" + strconv.FormatInt(migrateLockKey, 10) + ")",
}

// OpenPostgres connects to the database that connString names (a
// postgres:// URL or keyword=value pairs, as libpq takes them; pool_max_conns
// and the other pgxpool settings may be added), brings its schema up to
// date, and refuses a schema newer than this binary knows. No error it
// returns contains the connection string's password.
func OpenPostgres(ctx context.Context, connString string) (*Postgres, error) {
	if strings.TrimSpace(connString) == "" {
		return nil, errors.New("opening the PostgreSQL store: no connection string given")
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		// pgx redacts passwords from its parse errors only on a best-effort
		// basis, so its message is not passed on.
		return nil, errors.New("opening the PostgreSQL store: the connection string cannot be parsed; write it as postgres://user:password@host:5432/dbname?sslmode=verify-full or as keyword=value pairs such as \"host=db.internal user=caddy dbname=api_users\" (the parser's message is not shown, as it may quote the password)")
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "caddy-api-users"
	}
	s := &Postgres{
		where: describePostgres(cfg.ConnConfig),
		now:   func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) },
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening the PostgreSQL store %s: %w", s.where, err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("opening the PostgreSQL store %s: %w (check that the server is running, reachable from this host, and accepts this user)", s.where, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("migrating the PostgreSQL store %s: %w", s.where, err)
	}
	return s, nil
}

// describePostgres names a server and database for messages and logs,
// as a URL without the password.
func describePostgres(c *pgx.ConnConfig) string {
	u := url.URL{Scheme: "postgres", User: url.User(c.User), Path: "/" + c.Database}
	if strings.HasPrefix(c.Host, "/") {
		// A Unix socket directory.
		u.RawQuery = url.Values{"host": {c.Host}}.Encode()
	} else {
		u.Host = c.Host
		if c.Port != 0 {
			u.Host += ":" + strconv.Itoa(int(c.Port))
		}
	}
	return u.String()
}

// Where names the server and database, without the password.
func (s *Postgres) Where() string { return s.where }

// migrate brings the schema up to date with the shared migrator.
func (s *Postgres) migrate(ctx context.Context) error {
	// Two nodes starting together on an empty database would both run the
	// migrator's CREATE TABLE IF NOT EXISTS, and in PostgreSQL one of them
	// can fail on a duplicate catalog entry. Creating the table here, under
	// the migration lock, first makes that statement a no-op.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, postgresMigrations.lock); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at TEXT NOT NULL
)`); err != nil {
			return fmt.Errorf("creating the schema_migrations table: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close() // does not close the pool
	_, err = postgresMigrations.migrate(ctx, db)
	return err
}

// Close releases the pool's connections.
func (s *Postgres) Close() error {
	s.pool.Close()
	return nil
}

// pgQuerier is what *pgxpool.Pool and pgx.Tx have in common.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// write runs fn in one transaction that holds the store's write lock,
// committed if fn returns nil. An error from fn is returned as it is.
func (s *Postgres) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("beginning a write to the PostgreSQL store %s: %w", s.where, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		return fmt.Errorf("taking the write lock of the PostgreSQL store %s: %w", s.where, err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing a write to the PostgreSQL store %s: %w (if the connection was lost, the change may or may not have been made: read it back)", s.where, err)
	}
	return nil
}

// isPgError reports whether err is a server error with SQLSTATE code, and
// returns the constraint it names, if any.
func isPgError(err error, code string) (constraint string, ok bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == code {
		return pe.ConstraintName, true
	}
	return "", false
}

const (
	pgUniqueViolation = "23505"
)

// appendChange records a mutation and announces it, in the transaction of
// the mutation: the record and the notification become visible together,
// at commit, and not at all if the transaction rolls back. The caller holds
// the write lock, so max(seq) + 1 is the next number and no other writer
// can take it.
func (s *Postgres) appendChange(ctx context.Context, tx pgx.Tx, kind ChangeKind, key string) error {
	if _, err := tx.Exec(ctx, `WITH c AS (
	INSERT INTO changes (seq, kind, key, at)
	SELECT coalesce(max(seq), 0) + 1, $1, $2, $3 FROM changes
	RETURNING seq
)
SELECT pg_notify('`+ChangesChannel+`', seq::text) FROM c`, string(kind), key, s.now()); err != nil {
		return fmt.Errorf("recording the change to %s %q: %w", kind, key, err)
	}
	return nil
}

// LastChange implements Store.
func (s *Postgres) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("reading the last change: %w", err)
	}
	return seq, nil
}

// Changes implements Store.
func (s *Postgres) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	if limit < 0 {
		return nil, fmt.Errorf("listing changes: negative limit %d", limit)
	}
	q := `SELECT seq, kind, key, at FROM changes WHERE seq > $1 ORDER BY seq`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing changes: %w", err)
	}
	defer rows.Close()
	var changes []Change
	for rows.Next() {
		var c Change
		var kind string
		if err := rows.Scan(&c.Seq, &kind, &c.Key, &c.At); err != nil {
			return nil, fmt.Errorf("listing changes: %w", err)
		}
		c.Kind = ChangeKind(kind)
		c.At = c.At.UTC()
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing changes: %w", err)
	}
	return changes, nil
}

// PruneChanges deletes change records older than olderThan, except the
// newest one, which keeps LastChange from going backwards. A node that had
// not yet read the deleted records sees the gap and drops its whole cache.
func (s *Postgres) PruneChanges(ctx context.Context, olderThan time.Time) error {
	if olderThan.IsZero() {
		return nil
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM changes WHERE at < $1 AND seq < (SELECT max(seq) FROM changes)`, olderThan); err != nil {
			return fmt.Errorf("pruning change records: %w", err)
		}
		return nil
	})
}

// ListenChanges implements ChangeListener with LISTEN on a connection of its
// own, outside the pool: a pooled connection would be handed to queries
// and lose the subscription.
func (s *Postgres) ListenChanges(ctx context.Context, ready, changed func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig)
	if err != nil {
		return fmt.Errorf("connecting to %s to listen for changes: %w", s.where, err)
	}
	defer func() {
		// A clean close says goodbye to the server, which must not hang
		// when the server is unreachable.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(ctx) //nolint:errcheck // the connection is dropped either way
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+ChangesChannel); err != nil {
		return fmt.Errorf("listening for changes on %s: %w", s.where, err)
	}
	ready()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("waiting for changes on %s: %w", s.where, err)
		}
		changed()
	}
}

// Check implements Store: it looks for what the schema's constraints do
// not rule out.
func (s *Postgres) Check(ctx context.Context) error {
	var problems []string
	latest, err := postgresMigrations.load()
	if err != nil {
		return err
	}
	var version int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&version); err != nil {
		return fmt.Errorf("checking the PostgreSQL store %s: %w", s.where, err)
	}
	if want := latest[len(latest)-1].version; version != want {
		problems = append(problems, fmt.Sprintf("the schema is at version %d, not %d", version, want))
	}
	lines := func(query, format string) error {
		rows, err := s.pool.Query(ctx, query)
		if err != nil {
			return fmt.Errorf("checking the PostgreSQL store %s: %w", s.where, err)
		}
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("checking the PostgreSQL store %s: %w", s.where, err)
		}
		for _, f := range found {
			problems = append(problems, fmt.Sprintf(format, f))
		}
		return nil
	}
	// A user's product has no foreign key (0 means none), so the store
	// checks it on every write; this finds what a hand edit left behind.
	if err := lines(`SELECT u.id || ' (product ' || u.product || ')' FROM users u
		LEFT JOIN products p ON p.id = u.product
		WHERE u.product <> 0 AND (p.id IS NULL OR p.org <> u.org) ORDER BY u.id LIMIT 11`,
		"API user %s has a product that is missing or belongs to another org"); err != nil {
		return err
	}
	// An index left invalid by a failed CREATE INDEX CONCURRENTLY enforces
	// no uniqueness.
	if err := lines(`SELECT i.indexrelid::regclass::text FROM pg_index i
		WHERE NOT i.indisvalid AND i.indrelid IN ('users'::regclass, 'keys'::regclass, 'orgs'::regclass, 'products'::regclass, 'roles'::regclass, 'changes'::regclass,
			'usage_hourly'::regclass, 'usage_daily'::regclass, 'usage_counters'::regclass)`,
		"index %s is invalid: REINDEX it"); err != nil {
		return err
	}
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], "and more")
		}
		return fmt.Errorf("the PostgreSQL store %s is damaged (%s): fix the rows named, or restore a backup", s.where, strings.Join(problems, "; "))
	}
	return nil
}

// pgTime is t for a timestamptz column: NULL for the zero time.
func pgTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}

// pgTimestamptz is t as an array element: NULL for the zero time.
func pgTimestamptz(t time.Time) pgtype.Timestamptz {
	if t.IsZero() {
		return pgtype.Timestamptz{}
	}
	return pgtype.Timestamptz{Time: t.UTC(), Valid: true}
}

// pgDecodeTime reads a nullable timestamptz, in UTC.
func pgDecodeTime(t pgtype.Timestamptz) time.Time {
	if !t.Valid {
		return time.Time{}
	}
	return t.Time.UTC()
}
