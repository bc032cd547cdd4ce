package caddymodule

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the life cycle of roles, shared by the management API
// and the CLI. Roles come from two places: the api_users config, which is
// read-only here (change it in the Caddyfile), and the store, where these
// methods create, replace and delete them. The app's view merges both, the
// config winning on a name both define.
//
// Editing a role changes the rights of every user that has it at once,
// without replacing their access tokens: a role is a policy the operator
// edits on purpose for many users, and replacing all their tokens would
// take every one of them offline. To cut off a leaked token, rotate it.

// RoleSpec is what a PUT of a role sets: the whole role.
type RoleSpec struct {
	Description string   `json:"description"`
	Scopes      []string `json:"scopes"`
}

func (a *App) configRole(name string) (RoleConfig, bool) {
	for _, r := range a.Roles {
		if r.Name == name {
			return r, true
		}
	}
	return RoleConfig{}, false
}

// ListRoles returns every role, from the config and the store, by name.
func (a *App) ListRoles(ctx context.Context) ([]RoleView, error) {
	stored, err := a.store.ListRoles(ctx)
	if err != nil {
		return nil, storeErr(err, nil)
	}
	var out []RoleView
	for _, r := range a.Roles {
		out = append(out, RoleView{Name: r.Name, Description: r.Description, Scopes: nonNil(r.Scopes), Source: SourceConfig})
	}
	for _, r := range stored {
		if _, ok := a.configRole(r.Name); !ok {
			out = append(out, roleView(r))
		}
	}
	slices.SortFunc(out, func(x, y RoleView) int { return strings.Compare(x.Name, y.Name) })
	return out, nil
}

// GetRole returns the role called name.
func (a *App) GetRole(ctx context.Context, name string) (RoleView, error) {
	roles, err := a.ListRoles(ctx)
	if err != nil {
		return RoleView{}, err
	}
	for _, r := range roles {
		if r.Name == name {
			return r, nil
		}
	}
	return RoleView{}, &NotFoundError{Message: fmt.Sprintf("no role %q", name)}
}

// storedRole returns the store's role called name, if any.
func (a *App) storedRole(ctx context.Context, name string) (*store.Role, error) {
	stored, err := a.store.ListRoles(ctx)
	if err != nil {
		return nil, storeErr(err, nil)
	}
	for i := range stored {
		if stored[i].Name == name {
			return &stored[i], nil
		}
	}
	return nil, nil
}

// PutRole creates or replaces the store's role called name. Its scopes must
// be scopes some endpoint requires. A role the config defines cannot be
// changed here. It returns the role and how many users hold it: a change
// to a role's scopes takes effect at once for each of them, with the
// access tokens they already have (tokens are replaced when a user's own
// privileges change, not a role's).
func (a *App) PutRole(ctx context.Context, name string, spec RoleSpec) (RoleView, int, error) {
	if !validRoleName(name) {
		return RoleView{}, 0, fieldErr("name", "%q is not a valid role name: 1 to 64 lowercase letters, digits, '-' and '_', starting with a letter", name)
	}
	if _, ok := a.configRole(name); ok {
		return RoleView{}, 0, conflictErr("role %q is defined in the api_users config, which is read-only here: change it in the Caddyfile", name)
	}
	if err := checkText("description", spec.Description, 4000, true); err != nil {
		return RoleView{}, 0, err
	}
	if len(spec.Scopes) == 0 {
		return RoleView{}, 0, fieldErr("scopes", "lists no scopes: a role grants at least one, such as \"devices:list\"")
	}
	scopes, err := knownScopes(a.view.Load().catalog, "scopes", spec.Scopes)
	if err != nil {
		return RoleView{}, 0, err
	}
	r := store.Role{Name: name, Description: spec.Description, Scopes: make([]string, len(scopes))}
	for i, s := range scopes {
		r.Scopes[i] = string(s)
	}

	catalogMu.Lock()
	defer catalogMu.Unlock()
	prev, err := a.storedRole(ctx, name)
	if err != nil {
		return RoleView{}, 0, err
	}
	if err := a.store.PutRole(ctx, r); err != nil {
		return RoleView{}, 0, storeErr(err, nil)
	}
	if err := a.catalogChanged(ctx); err != nil {
		return RoleView{}, 0, err
	}
	holders, err := a.countUsersWith(ctx, func(u *policy.APIUser) bool { return slices.Contains(u.Roles, name) })
	if err != nil {
		return RoleView{}, 0, fmt.Errorf("the role is stored, but counting its users failed: %w", err)
	}
	after := roleView(r)
	fields := []zap.Field{zap.String("role", name), zap.Any("after", after), zap.Int("users_affected", holders)}
	if prev != nil {
		fields = append(fields, zap.Any("before", roleView(*prev)))
	}
	a.auditChange(ctx, "put_role", fields...)
	return after, holders, nil
}

// DeleteRole deletes the store's role called name. It refuses a role the
// config defines, and a role any user still has: deleting it would
// silently take rights away from them. (A user given the role by another
// process between the check and the delete keeps the name, which then
// grants nothing: fewer rights, never more.)
func (a *App) DeleteRole(ctx context.Context, name string) error {
	if _, ok := a.configRole(name); ok {
		return conflictErr("role %q is defined in the api_users config, which is read-only here: remove it from the Caddyfile", name)
	}
	catalogMu.Lock()
	defer catalogMu.Unlock()
	prev, err := a.storedRole(ctx, name)
	if err != nil {
		return err
	}
	if prev == nil {
		return &NotFoundError{Message: fmt.Sprintf("no role %q", name)}
	}
	users, more, err := a.usersWith(ctx, func(u *policy.APIUser) bool { return slices.Contains(u.Roles, name) })
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return conflictErr("role %q is still given to API users %s: remove it from them first", name, listSome(users, more))
	}
	if err := a.store.DeleteRole(ctx, name); err != nil {
		return storeErr(err, func() error { return &NotFoundError{Message: fmt.Sprintf("no role %q", name)} })
	}
	if err := a.catalogChanged(ctx); err != nil {
		return err
	}
	a.auditChange(ctx, "delete_role", zap.String("role", name), zap.Any("before", roleView(*prev)))
	return nil
}

// usersWith returns the IDs of up to five users for which match is true,
// and whether there are more.
func (a *App) usersWith(ctx context.Context, match func(u *policy.APIUser) bool) ([]string, bool, error) {
	const shown = 5
	var ids []string
	more := false
	err := a.eachUser(ctx, func(u *policy.APIUser) bool {
		if !match(u) {
			return true
		}
		if len(ids) == shown {
			more = true
			return false
		}
		ids = append(ids, u.ID)
		return true
	})
	return ids, more, err
}

// countUsersWith counts the users for which match is true.
func (a *App) countUsersWith(ctx context.Context, match func(u *policy.APIUser) bool) (int, error) {
	n := 0
	err := a.eachUser(ctx, func(u *policy.APIUser) bool {
		if match(u) {
			n++
		}
		return true
	})
	return n, err
}

// eachUser calls fn with every user until fn returns false. It pages
// through the store, so memory stays bounded however many users there are.
func (a *App) eachUser(ctx context.Context, fn func(u *policy.APIUser) bool) error {
	const page = 500
	f := store.UserFilter{Limit: page}
	for {
		users, err := a.store.ListUsers(ctx, f)
		if err != nil {
			return storeErr(err, nil)
		}
		for _, u := range users {
			if !fn(u) {
				return nil
			}
		}
		if len(users) < page {
			return nil
		}
		f.After = users[len(users)-1].ID
	}
}

func listSome(ids []string, more bool) string {
	s := strings.Join(ids, ", ")
	if more {
		s += " and more"
	}
	return s
}

// catalogChanged rebuilds this process's view after a change to roles,
// orgs or products, and drops every cached user, whose effective rights may
// have changed. Other processes follow within their sync interval. Since
// reloads are serialised and each reads the store afresh, a reload the
// change follower began earlier cannot publish an older view after this one.
func (a *App) catalogChanged(ctx context.Context) error {
	err := a.reloadView(ctx)
	a.cache.invalidateAll()
	if err != nil {
		return fmt.Errorf("the change is stored, but rebuilding the catalog failed: %w", err)
	}
	return nil
}

// validRoleName is the syntax of role names.
func validRoleName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
