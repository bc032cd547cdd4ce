package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// migrationFiles holds each dialect's schema history, one directory per
// dialect (migrations/sqlite, later migrations/postgres). A file is named
// NNNN_what.sql; NNNN is its version, counted from 1 without gaps. A file is
// never edited once released: a change to the schema is a new file.
//
//go:embed migrations
var migrationFiles embed.FS

// migration is one versioned schema change.
type migration struct {
	version int64
	name    string // the file name, for messages
	sql     string
}

// migrator applies one dialect's migrations to a database. It is generic
// over database/sql, so the PostgreSQL store reuses it with its own
// directory, placeholder style and lock.
type migrator struct {
	fsys fs.FS
	dir  string

	// bind returns the placeholder of the n-th argument, counted from 1:
	// "?" for SQLite, "$1" for PostgreSQL.
	bind func(n int) string

	// lock, when set, runs first in each migration's transaction, so that
	// processes that start together apply a migration once: SQLite needs
	// none, as its write transactions begin with BEGIN IMMEDIATE; PostgreSQL
	// takes an advisory transaction lock.
	lock string
}

// load reads and orders the migrations, and checks that their versions run
// from 1 without gaps, so a mistake in a release fails every test.
func (m migrator) load() ([]migration, error) {
	entries, err := fs.ReadDir(m.fsys, m.dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations in %s: %w", m.dir, err)
	}
	var migs []migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		prefix, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			return nil, fmt.Errorf("migration %s/%s: name it NNNN_what.sql", m.dir, e.Name())
		}
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s/%s: name it NNNN_what.sql, NNNN counting from 1", m.dir, e.Name())
		}
		text, err := fs.ReadFile(m.fsys, path.Join(m.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s/%s: %w", m.dir, e.Name(), err)
		}
		migs = append(migs, migration{version: v, name: e.Name(), sql: string(text)})
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	for i, mig := range migs {
		if mig.version != int64(i+1) {
			return nil, fmt.Errorf("migrations in %s: expected version %d, found %s (versions run from 1 without gaps or repeats)", m.dir, i+1, mig.name)
		}
	}
	if len(migs) == 0 {
		return nil, fmt.Errorf("no migrations in %s", m.dir)
	}
	return migs, nil
}

// migrate brings db's schema up to the newest version this binary knows,
// each migration in its own transaction, and returns the resulting
// version. It is idempotent. It refuses a database whose schema is newer
// than the binary: an older binary would misread the data, or write rows
// that a newer one does not expect.
func (m migrator) migrate(ctx context.Context, db *sql.DB) (int64, error) {
	migs, err := m.load()
	if err != nil {
		return 0, err
	}
	latest := migs[len(migs)-1].version

	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at TEXT NOT NULL
)`); err != nil {
		return 0, fmt.Errorf("creating the schema_migrations table: %w", err)
	}

	current, err := m.version(ctx, db)
	if err != nil {
		return 0, err
	}
	if current > latest {
		return current, fmt.Errorf("the database schema is at version %d, but this binary knows only up to version %d: upgrade Caddy (with the api_users plugin) to the release that wrote it, or restore a backup made before that release ran", current, latest)
	}

	for _, mig := range migs {
		if mig.version <= current {
			continue
		}
		if err := m.apply(ctx, db, mig); err != nil {
			return 0, err
		}
	}
	return m.version(ctx, db)
}

// version is the highest applied migration, 0 for an empty database.
func (m migrator) version(ctx context.Context, db *sql.DB) (int64, error) {
	var v int64
	if err := db.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return v, nil
}

// apply runs one migration and records it, unless another process got
// there first.
func (m migrator) apply(ctx context.Context, db *sql.DB, mig migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: beginning its transaction: %w", mig.name, err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	if m.lock != "" {
		if _, err := tx.ExecContext(ctx, m.lock); err != nil {
			return fmt.Errorf("migration %s: taking the migration lock: %w", mig.name, err)
		}
	}
	var applied int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = `+m.bind(1), mig.version).Scan(&applied); err != nil {
		return fmt.Errorf("migration %s: %w", mig.name, err)
	}
	if applied > 0 {
		return nil // another process applied it while we waited for the lock
	}
	if _, err := tx.ExecContext(ctx, mig.sql); err != nil {
		return fmt.Errorf("migration %s failed, and nothing of it was applied: %w", mig.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (`+m.bind(1)+`, `+m.bind(2)+`)`,
		mig.version, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("migration %s: recording it: %w", mig.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: committing it: %w", mig.name, err)
	}
	return nil
}
