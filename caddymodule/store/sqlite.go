package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite is the embedded Store: one database file, by default in Caddy's
// data directory. Another process (the CLI) may use the same file while the
// gateway runs; SQLite's file locks keep them consistent.
//
// It holds two connection pools. The writer pool has exactly one
// connection, and every transaction on it begins with BEGIN IMMEDIATE, so it
// takes the database's write lock before reading anything: a
// read-modify-write such as UpdateUser can never act on a stale read, and
// writers of this process queue in database/sql (where a context can cancel
// the wait) instead of spinning in SQLite's busy handler. Writers of other
// processes wait for the lock for up to the busy timeout. The reader pool
// has several connections, marked query-only; in WAL mode they read a
// consistent snapshot while a write is in progress, so lookups on the
// gateway's hot path never wait for a writer.
type SQLite struct {
	path   string
	writer *sql.DB
	reader *sql.DB
	now    func() time.Time
}

var _ Store = (*SQLite)(nil)

// busyTimeoutMillis is how long a write waits for another process's write
// lock before it fails.
const busyTimeoutMillis = 5000

// sqliteMigrations applies migrations/sqlite.
var sqliteMigrations = migrator{
	fsys: migrationFiles,
	dir:  "migrations/sqlite",
	bind: func(int) string { return "?" },
}

// OpenSQLite opens the database at path, creating it (mode 0600) and its
// parent directory (mode 0700) if needed, and brings its schema up to date.
// It refuses a database whose schema is newer than this binary knows.
func OpenSQLite(path string) (*SQLite, error) {
	if path == "" {
		return nil, errors.New("opening the SQLite store: no database path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite store %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("creating the directory of the SQLite store %s: %w (check the permissions of its parent, or choose another path)", abs, err)
	}
	// Create the file ourselves so that it, and the -wal and -shm files
	// SQLite creates with the same mode, are readable by the owner only:
	// they hold credential hashes.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite store %s: %w (check that the file is writable by the user Caddy runs as)", abs, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("opening the SQLite store %s: %w", abs, err)
	}

	s := &SQLite{path: abs, now: func() time.Time { return time.Now().UTC() }}
	s.writer, err = sql.Open("sqlite", sqliteDSN(abs, false))
	if err != nil {
		return nil, fmt.Errorf("opening the SQLite store %s: %w", abs, err)
	}
	s.writer.SetMaxOpenConns(1)
	s.writer.SetMaxIdleConns(1)
	s.writer.SetConnMaxLifetime(0)
	s.writer.SetConnMaxIdleTime(0)

	ctx := context.Background()
	if err := s.prepare(ctx); err != nil {
		s.writer.Close()
		return nil, err
	}

	s.reader, err = sql.Open("sqlite", sqliteDSN(abs, true))
	if err != nil {
		s.writer.Close()
		return nil, fmt.Errorf("opening the SQLite store %s for reading: %w", abs, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.reader.SetMaxOpenConns(readers)
	s.reader.SetMaxIdleConns(readers)
	if err := s.reader.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("opening the SQLite store %s for reading: %w", abs, err)
	}
	return s, nil
}

// prepare checks the file is a usable SQLite database in WAL mode and
// migrates its schema.
func (s *SQLite) prepare(ctx context.Context) error {
	var mode string
	if err := s.writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("opening the SQLite store %s: %w (is it an SQLite database?)", s.path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("opening the SQLite store %s: the journal mode is %q, not WAL (WAL needs a local filesystem: move the database off network storage)", s.path, mode)
	}
	if _, err := sqliteMigrations.migrate(ctx, s.writer); err != nil {
		return fmt.Errorf("migrating the SQLite store %s: %w", s.path, busyHint(err))
	}
	return nil
}

// sqliteDSN builds the driver's connection string for path. Every
// connection waits up to busyTimeoutMillis for a lock, enforces foreign
// keys, and syncs each commit to disk (synchronous=FULL), so an
// acknowledged write survives a power cut. The writer converts the file to
// WAL (a persistent setting) and begins transactions with BEGIN IMMEDIATE;
// readers are query-only.
func sqliteDSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeoutMillis))
	q.Set("_foreign_keys", "1")
	q.Set("_synchronous", "FULL")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		q.Set("_journal_mode", "WAL")
		q.Set("_txlock", "immediate")
	}
	// A file: URI, so that a path holding '?' or '#' is escaped, not cut.
	p := filepath.ToSlash(path)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows drive letter: file:///C:/...
	}
	return (&url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}).String()
}

// Path is the absolute path of the database file.
func (s *SQLite) Path() string { return s.path }

// Close releases both pools. The last connection to close checkpoints the
// WAL into the database file.
func (s *SQLite) Close() error {
	var errs []error
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.writer.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing the SQLite store %s: %w", s.path, err)
	}
	return nil
}

// querier is what *sql.DB and *sql.Tx have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// write runs fn in one write transaction, committed if fn returns nil. An
// error from fn is returned as it is.
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning a write to the SQLite store %s: %w", s.path, busyHint(err))
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing a write to the SQLite store %s: %w", s.path, busyHint(err))
	}
	return nil
}

// read runs fn in a read transaction, so that what it reads in several
// statements (a user and its keys) is one consistent snapshot.
func (s *SQLite) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.reader.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("reading the SQLite store %s: %w", s.path, err)
	}
	defer tx.Rollback() //nolint:errcheck // nothing to commit
	return fn(tx)
}

// busyHint explains a lock timeout to the operator.
func busyHint(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY {
		return fmt.Errorf("%w (another process held the database's write lock for more than %dms: look for a stuck CLI command or an open sqlite3 shell)", err, busyTimeoutMillis)
	}
	return err
}

// isUniqueViolation reports whether err is a violation of a UNIQUE or
// PRIMARY KEY constraint.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}

// appendChange records a mutation in the same transaction as the mutation.
func (s *SQLite) appendChange(ctx context.Context, tx *sql.Tx, kind ChangeKind, key string) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO changes (kind, key, at) VALUES (?, ?, ?)`,
		string(kind), key, s.now().UnixNano()); err != nil {
		return fmt.Errorf("recording the change to %s %q: %w", kind, key, err)
	}
	return nil
}

// LastChange implements Store.
func (s *SQLite) LastChange(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.reader.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM changes`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("reading the last change: %w", err)
	}
	return seq, nil
}

// Changes implements Store.
func (s *SQLite) Changes(ctx context.Context, after int64, limit int) ([]Change, error) {
	if limit < 0 {
		return nil, fmt.Errorf("listing changes: negative limit %d", limit)
	}
	q := `SELECT seq, kind, key, at FROM changes WHERE seq > ? ORDER BY seq`
	args := []any{after}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing changes: %w", err)
	}
	defer rows.Close()
	var changes []Change
	for rows.Next() {
		var c Change
		var kind string
		var at int64
		if err := rows.Scan(&c.Seq, &kind, &c.Key, &at); err != nil {
			return nil, fmt.Errorf("listing changes: %w", err)
		}
		c.Kind = ChangeKind(kind)
		c.At = time.Unix(0, at).UTC()
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing changes: %w", err)
	}
	return changes, nil
}

// PruneChanges deletes change records older than olderThan, except the
// newest one, which keeps LastChange from going backwards. Run it now and
// then (say daily, keeping a day) so the table does not grow without end.
func (s *SQLite) PruneChanges(ctx context.Context, olderThan time.Time) error {
	if olderThan.IsZero() {
		return nil
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM changes WHERE at < ? AND seq < (SELECT max(seq) FROM changes)`,
			olderThan.UnixNano()); err != nil {
			return fmt.Errorf("pruning change records: %w", err)
		}
		return nil
	})
}

// Check implements Store: it runs PRAGMA integrity_check and
// foreign_key_check and reports what they find.
func (s *SQLite) Check(ctx context.Context) error {
	problems, err := pragmaLines(ctx, s.reader, "PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("checking the SQLite store %s: %w", s.path, err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		problems = nil
	}
	fk, err := pragmaLines(ctx, s.reader, "PRAGMA foreign_key_check")
	if err != nil {
		return fmt.Errorf("checking the SQLite store %s: %w", s.path, err)
	}
	for _, line := range fk {
		problems = append(problems, "foreign key violation: "+line)
	}
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("and %d more", len(problems)-10))
		}
		return fmt.Errorf("the SQLite store %s is damaged (%s): restore it from a backup", s.path, strings.Join(problems, "; "))
	}
	return nil
}

// pragmaLines runs a checking pragma and returns each row's columns joined
// by spaces.
func pragmaLines(ctx context.Context, q querier, pragma string) ([]string, error) {
	rows, err := q.QueryContext(ctx, pragma)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var lines []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			parts[i] = v.String
		}
		lines = append(lines, strings.Join(parts, " "))
	}
	return lines, rows.Err()
}
