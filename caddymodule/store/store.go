// Package store keeps API users, their credentials' hashes, roles, orgs and
// products. The Store interface is implemented by SQLite (the embedded,
// zero-configuration default) and by PostgreSQL (shared by several gateway
// nodes), and both must pass the behaviour suite in storetest. Every
// mutation is one transaction that also appends a change record, so other
// processes and nodes learn what changed by polling Changes (and, with
// PostgreSQL, at once through ChangeListener) and invalidate their caches;
// a write that is acknowledged has been committed durably, and two writers
// changing the same user concurrently never lose either change.
package store

import (
	"context"
	"errors"
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
	After      string // ID cursor: only IDs > After, ordered by ID
	Limit      int    // 0 = no limit
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
