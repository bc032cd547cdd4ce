// Package store keeps API users, their credentials' hashes, roles, orgs and
// products. The Store interface is implemented by SQLite (the embedded,
// zero-configuration default) and by PostgreSQL (shared by several gateway
// nodes), and both must pass the behaviour suite in storetest. Every
// mutation is one transaction that also appends a change record, so other
// processes and nodes learn what changed by polling Changes (and, with
// PostgreSQL, at once through ChangeListener) and invalidate their caches;
// a write that is acknowledged has been committed durably, and two writers
// changing the same user concurrently never lose either change.
//
// # Adding a field to API users
//
// A user field is written in these places, and a test fails for each one
// that is forgotten:
//
//  1. policy.APIUser, and APIUser.Clone if the field holds a slice or map.
//  2. A migration in both dialects, migrations/sqlite/000N_*.sql and
//     migrations/postgres/000N_*.sql, with the same number.
//  3. In users.go (this package): userFields, userArgs and userRow (dest
//     and user); validateUser if the schema cannot check the value. Both
//     drivers read and write users through these alone.
//  4. storetest.FullUser sets the field: the suite fails while FullUser
//     leaves any field zero, and its round trip fails for a driver that
//     forgets the column.
//  5. In caddymodule: UserSpec and applySpec (userspec.go) if the
//     management API sets it, and tokenMustChange (users.go) if widening
//     it is a privilege change; userView (views.go); openapi.json; the CLI's
//     flags and printUser.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// The errors a Store returns; test for them with errors.Is, since they are
// usually wrapped with a message that names the record.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflicting concurrent change") // stale version

	// ErrInUse is returned when deleting an org or product that users (or,
	// for an org, products) still belong to, or when moving a product to
	// another org while users of the old org still belong to it.
	ErrInUse = errors.New("still in use")
)

// Role is a named set of scopes; a user's effective scopes are its own plus
// those of its roles.
type Role struct {
	Name        string
	Description string
	Scopes      []string
}

// UserFilter selects users for ListUsers.
type UserFilter struct {
	Org        string // "" = any
	Product    int64  // with ProductSet: 0 = org-level users only, >0 = that product's users
	ProductSet bool
	Limit      int // 0 = no limit

	// Query, when set, keeps the users whose ID or friendly name contains
	// it, ignoring the case of ASCII letters.
	Query string

	// State, when set, keeps the users in that state at Now (a zero Now is
	// the store's clock). The state is judged on what the store holds: the
	// last-used time it has may be up to last_used_interval behind.
	State UserState
	Now   time.Time

	// Sort orders the users, by ID when zero; Desc reverses the order. Ties
	// are broken by ID, in the same direction, so the order is total.
	Sort UserSort
	Desc bool

	// After is the cursor: the ID of the last user of the previous page,
	// and, unless Sort is by ID, that user's sort key in AfterName (SortName)
	// or AfterTime (SortCreated, SortLastUsed; zero: never used). Only the
	// users after it in the order are listed, so users inserted between two
	// pages never make another user be skipped or listed twice.
	After     string
	AfterName string
	AfterTime time.Time
}

// UserState is what UserFilter.State selects: whether the user may
// authenticate, and if not, why (policy.Principal.Active's rule).
type UserState string

// The states of an API user.
const (
	StateActive      UserState = "active"
	StateRetired     UserState = "retired"
	StateExpired     UserState = "expired"      // not retired, past its expiry
	StateIdleExpired UserState = "idle_expired" // neither of the above, idle longer than its idle timeout
)

// UserSort is the key UserFilter.Sort orders by.
type UserSort string

// The orders of ListUsers.
const (
	SortID       UserSort = ""          // by ID (the username)
	SortName     UserSort = "name"      // by friendly name, byte-wise
	SortCreated  UserSort = "created"   // by creation time
	SortLastUsed UserSort = "last_used" // by last-used time, never-used first
)

// check refuses a filter no store can apply.
func (f *UserFilter) check() error {
	switch {
	case f.Limit < 0:
		return fmt.Errorf("listing API users: negative limit %d", f.Limit)
	case f.ProductSet && f.Product < 0:
		return fmt.Errorf("listing API users: negative product ID %d", f.Product)
	}
	switch f.State {
	case "", StateActive, StateRetired, StateExpired, StateIdleExpired:
	default:
		return fmt.Errorf("listing API users: unknown state %q", f.State)
	}
	switch f.Sort {
	case SortID, SortName, SortCreated, SortLastUsed:
	default:
		return fmt.Errorf("listing API users: unknown sort %q", f.Sort)
	}
	return nil
}

// HistoryEntry is one management change to an API user, as its history
// keeps it. Before and After are JSON views of the user, without any
// secret or token value; Before is nil for a creation, After for a
// deletion.
type HistoryEntry struct {
	Seq    int64
	UserID string
	At     time.Time
	Actor  string
	Action string
	Detail string
	Before []byte
	After  []byte
}

// HistoryNote says who makes a change to an API user and what it is, so
// the store can add it to the user's history in the change's own
// transaction: an acknowledged change always has its entry, and a failed
// one never does. View renders a user for the entry; it must leave out
// every secret and token value.
type HistoryNote struct {
	Actor  string
	Action string
	Detail string
	View   func(u *policy.APIUser) ([]byte, error)
}

type historyNoteKey struct{}

// WithHistory returns a context whose user changes (CreateUser,
// UpdateUser, DeleteUserIf) are recorded in the user's history with n.
// Changes made without one are not recorded.
func WithHistory(ctx context.Context, n HistoryNote) context.Context {
	return context.WithValue(ctx, historyNoteKey{}, n)
}

// historyEntry builds the entry of a change to the user id, or returns
// nil when ctx carries no note.
func historyEntry(ctx context.Context, id string, at time.Time, before, after *policy.APIUser) (*HistoryEntry, error) {
	n, ok := ctx.Value(historyNoteKey{}).(HistoryNote)
	if !ok || n.View == nil {
		return nil, nil
	}
	e := &HistoryEntry{UserID: id, At: at, Actor: n.Actor, Action: n.Action, Detail: n.Detail}
	var err error
	if before != nil {
		if e.Before, err = n.View(before); err != nil {
			return nil, fmt.Errorf("recording the history of API user %q: %w", id, err)
		}
	}
	if after != nil {
		if e.After, err = n.View(after); err != nil {
			return nil, fmt.Errorf("recording the history of API user %q: %w", id, err)
		}
	}
	if e.Action == "" {
		return nil, fmt.Errorf("recording the history of API user %q: the change has no action", id)
	}
	return e, nil
}

// ChangeKind names what a change record is about.
type ChangeKind string

// The kinds of change records.
const (
	ChangeUser    ChangeKind = "user"
	ChangeRole    ChangeKind = "role"
	ChangeOrg     ChangeKind = "org"
	ChangeProduct ChangeKind = "product"
)

// Change is one committed mutation. Seq increases with every change; a
// reader that remembers the last Seq it saw asks for the ones after it.
type Change struct {
	Seq  int64
	Kind ChangeKind
	Key  string // user ID, role name, org ID, product ID as decimal
	At   time.Time
}

// Store is the persistent home of API users and what they refer to.
//
// Conventions every implementation follows, and storetest checks: a list or
// map that is empty is returned as nil (never as an empty non-nil value),
// including the lists inside ResourceConstraints, whose keys are kept even
// when their list is empty; times come back in UTC, exact to at least the
// microsecond (SQLite keeps nanoseconds), and a zero time stays zero;
// returned users are fresh deep copies that the caller may change freely.
type Store interface {
	// CreateUser inserts u with its keys. ErrExists if the ID (or the token
	// hash, or a key ID) is taken; ErrNotFound (wrapped) if u names an org,
	// or a product of that org, that does not exist. Sets u.Version = 1, and
	// sets a zero u.CreatedAt to now and a zero u.UpdatedAt to u.CreatedAt.
	CreateUser(ctx context.Context, u *policy.APIUser) error
	GetUser(ctx context.Context, id string) (*policy.APIUser, error)        // ErrNotFound
	UserIDByTokenHash(ctx context.Context, h policy.Hash) (string, error)   // ErrNotFound, also for the zero hash
	ListUsers(ctx context.Context, f UserFilter) ([]*policy.APIUser, error) // ordered by ID, keys included
	CountUsers(ctx context.Context) (int64, error)

	// ListHistory returns the history of the user id, newest first: the
	// entries with Seq < before (0: from the newest), at most limit (0 = no
	// limit). The history outlives the user.
	ListHistory(ctx context.Context, id string, before int64, limit int) ([]HistoryEntry, error)

	// UpdateUser reads the user and calls fn on a copy inside one write
	// transaction; if fn returns an error nothing is written and that error
	// is returned as is. Otherwise the copy is written whole (including
	// keys: added, removed, changed), Version is incremented and UpdatedAt
	// set to now, and the stored result returned. Changing the ID is an
	// error. fn must not call the Store: it runs while the write lock is
	// held.
	UpdateUser(ctx context.Context, id string, fn func(u *policy.APIUser) error) (*policy.APIUser, error)
	DeleteUser(ctx context.Context, id string) error // ErrNotFound; removes keys too

	// DeleteUserIf deletes the user as DeleteUser does, if check, called
	// on the user as stored inside the delete's transaction, returns nil;
	// otherwise it deletes nothing and returns check's error as is. So a
	// delete conditioned on the user's tenancy or version cannot remove a
	// user changed in between. fn must not call the Store.
	DeleteUserIf(ctx context.Context, id string, check func(u *policy.APIUser) error) error

	// TouchUsers records last-used times; a time only ever moves forward;
	// it does not change Version or UpdatedAt and appends no change record
	// (it is not a privilege change). Unknown user IDs and zero times are
	// ignored.
	TouchUsers(ctx context.Context, lastUsed map[string]time.Time) error

	ListRoles(ctx context.Context) ([]Role, error)     // ordered by name
	PutRole(ctx context.Context, r Role) error         // insert or replace
	DeleteRole(ctx context.Context, name string) error // ErrNotFound

	ListOrgs(ctx context.Context) ([]policy.Org, error) // ordered by ID
	PutOrg(ctx context.Context, o policy.Org) error     // insert or replace; ErrExists if the slug is another org's
	DeleteOrg(ctx context.Context, id string) error     // ErrNotFound; ErrInUse if it still has products or users

	ListProducts(ctx context.Context) ([]policy.Product, error) // ordered by ID
	// PutProduct inserts or replaces p. ErrNotFound (wrapped) if its org
	// does not exist, ErrExists if the slug is another product's, ErrInUse
	// if it moves to another org while users of the old org belong to it.
	PutProduct(ctx context.Context, p policy.Product) error
	DeleteProduct(ctx context.Context, id int64) error // ErrNotFound; ErrInUse if users still belong to it

	// LastChange is the highest change sequence number (0 if none); Changes
	// lists changes with Seq > after, ascending, at most limit (0 = no
	// limit). Old change records may be pruned, but never the newest one,
	// so a reader whose last Seq is below the oldest remaining record minus
	// one must assume it missed changes and drop its whole cache.
	LastChange(ctx context.Context) (int64, error)
	Changes(ctx context.Context, after int64, limit int) ([]Change, error)

	// Check verifies the store's integrity (SQLite: PRAGMA integrity_check
	// and foreign_key_check).
	Check(ctx context.Context) error
	Close() error
}

// ChangeListener is a Store that announces committed changes as they
// happen, so a follower need not wait for its next poll of Changes.
// PostgreSQL does, with LISTEN/NOTIFY.
type ChangeListener interface {
	// ListenChanges subscribes on a connection of its own, calls ready once
	// the subscription is in place, and then changed after every committed
	// change, until ctx is done or the connection fails; it returns why it
	// stopped. Announcements made while no subscription is in place are
	// lost, so a follower reads Changes after each ready. changed may be
	// called once for several changes, and must not block. Both are called
	// on the goroutine that called ListenChanges.
	ListenChanges(ctx context.Context, ready, changed func()) error
}

func hasHistoryNote(ctx context.Context) bool {
	_, ok := ctx.Value(historyNoteKey{}).(HistoryNote)
	return ok
}
