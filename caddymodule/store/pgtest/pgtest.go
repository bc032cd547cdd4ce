// Package pgtest runs a throwaway PostgreSQL server for a test: initdb into
// a temporary directory, then the postgres server as a child of the test
// process, listening on a Unix socket in that directory and on no TCP port
// at all, so nothing else on the machine can reach it and parallel test
// binaries never collide. The server is stopped and its directory removed
// when the test ends; it is started with Pdeathsig, so it dies with the test
// binary even when that crashes. Tests get a fresh database per store with
// NewDatabase, and may stop and restart the server to see what the gateway
// does without its database.
//
// PostgreSQL refuses to run as root, so when the tests run as root the
// server runs as the "postgres" user of the distribution's package (or
// "nobody"). When no PostgreSQL binaries are found, the test is skipped,
// unless CI=true: CI must not skip silently, so there it fails, and .ci/run
// installs the postgresql package first.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one PostgreSQL server of a test.
type Server struct {
	bin  string // the directory holding initdb and postgres
	dir  string // the temporary directory: the socket, the log and data/
	cred *syscall.Credential

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed when proc has exited

	databases   atomic.Int64
	schemasOnce sync.Once
}

// Superuser is the server's superuser, who connects over the socket without
// a password. Other roles made with NewRole need theirs.
const Superuser = "postgres"

// port only names the socket file (.s.PGSQL.5432): the server listens on
// no TCP port.
const port = 5432

// Start initializes and starts a server for t, and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
			t.Fatalf("PostgreSQL is needed on CI: %v (.ci/run installs the postgresql package)", err)
		}
		t.Skipf("skipping the PostgreSQL test: %v (install the postgresql package to run it)", err)
	}
	s := &Server{bin: bin}
	if os.Geteuid() == 0 {
		s.cred, err = unprivileged()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A short path of our own, not t.TempDir(): a Unix socket's path is
	// limited to about 100 bytes, and the server's user must be able to
	// reach it.
	s.dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			if log, err := os.ReadFile(s.logPath()); err == nil {
				t.Logf("PostgreSQL server log:\n%s", lastLines(log, 40))
			}
		}
		os.RemoveAll(s.dir)
	})
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}

	initdb := s.command("initdb", "-D", s.data(), "-U", Superuser, "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// The superuser connects without a password; every other role needs
	// its password, so a test can see that a password works and is never
	// logged.
	hba := "local all " + Superuser + " trust\nlocal all all scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(s.data(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	if s.cred != nil {
		if err := os.Chown(filepath.Join(s.data(), "pg_hba.conf"), int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	s.Start(t)
	return s
}

// Start starts the server again after Stop, on the same data; the URLs
// given out before work again.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		t.Fatal("pgtest: the server is already running")
	}
	logFile, err := os.OpenFile(s.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := s.command("postgres", "-D", s.data(),
		"-k", s.dir, "-p", strconv.Itoa(port), "-c", "listen_addresses=",
		// A test server needs no durability and should start fast.
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=16MB")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// SIGQUIT (an immediate shutdown) if the test binary dies. Pdeathsig
	// follows the thread that started the child, so that thread is kept
	// for the child's lifetime.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			close(done)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("starting postgres: %v", err)
	}
	s.proc, s.done = cmd.Process, done

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return
		}
		select {
		case <-done:
			log, _ := os.ReadFile(s.logPath())
			t.Fatalf("postgres exited while starting:\n%s", lastLines(log, 40))
		case <-ctx.Done():
			t.Fatalf("postgres did not accept connections within 30s: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop shuts the server down (a fast shutdown: open connections are
// closed) and waits for it to exit.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if !s.stop() {
		t.Fatal("pgtest: the server is not running")
	}
}

func (s *Server) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	_ = s.proc.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.proc.Kill()
		<-s.done
	}
	s.proc, s.done = nil, nil
	return true
}

// URL is the connection string of database db as the superuser.
func (s *Server) URL(db string) string {
	return s.url(url.User(Superuser), db)
}

func (s *Server) url(u *url.Userinfo, db string) string {
	q := url.Values{"host": {s.dir}, "port": {strconv.Itoa(port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: u, Path: "/" + db, RawQuery: q.Encode()}).String()
}

// NewDatabase creates an empty database and returns its connection string
// (as the superuser).
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", s.databases.Add(1))
	s.Exec(t, "postgres", "CREATE DATABASE "+name)
	return s.URL(name)
}

// NewSchema creates an empty schema in a database shared by the test's
// schemas, and returns a connection string that puts it first on the
// search_path. It is several times faster than NewDatabase, for suites that
// open many stores; the schemas share the database's LISTEN channels and
// advisory locks.
func (s *Server) NewSchema(t testing.TB) string {
	t.Helper()
	s.schemasOnce.Do(func() { s.Exec(t, "postgres", "CREATE DATABASE schemas") })
	name := fmt.Sprintf("test_%d", s.databases.Add(1))
	s.Exec(t, "schemas", "CREATE SCHEMA "+name)
	u, err := url.Parse(s.URL("schemas"))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// NewRole creates a login role with a password that owns database db (as
// NewDatabase named it in its URL), and returns a connection string with
// that password in it.
func (s *Server) NewRole(t testing.TB, dbURL, role, password string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	s.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgx.Identifier{role}.Sanitize(), strings.ReplaceAll(password, "'", "''")))
	s.Exec(t, "postgres", fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", pgx.Identifier{db}.Sanitize(), pgx.Identifier{role}.Sanitize()))
	s.Exec(t, db, fmt.Sprintf("ALTER SCHEMA public OWNER TO %s", pgx.Identifier{role}.Sanitize()))
	return s.url(url.UserPassword(role, password), db)
}

// Exec runs SQL statements in database db as the superuser.
func (s *Server) Exec(t testing.TB, db, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		t.Fatalf("pgtest: connecting to %s: %v", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

func (s *Server) data() string    { return filepath.Join(s.dir, "data") }
func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// command prepares one of the server's programs, to run as the server's
// user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// binDir finds the directory holding initdb and postgres: where initdb on
// PATH really lives, or else the newest /usr/lib/postgresql/*/bin (where
// Debian's package puts them, off PATH).
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	slices.SortFunc(matches, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return vb - va
	})
	for _, m := range matches {
		dir := filepath.Dir(m)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb and postgres) on PATH or in /usr/lib/postgresql/*/bin")
}

// unprivileged is the user a root test runs the server as.
func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
	}
	return nil, errors.New("pgtest: running as root, and there is neither a postgres nor a nobody user to run PostgreSQL as (it refuses to run as root)")
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
