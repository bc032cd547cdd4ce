package caddymodule

import (
	"context"
	"errors"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// principal returns the compiled user for an ID, from the cache or the
// store. A nil principal with a nil error means no such user. It fails
// closed while the store cannot be followed (see sync.go).
func (a *App) principal(ctx context.Context, id string) (*cachedUser, error) {
	if err := a.checkFresh(); err != nil {
		return nil, err
	}
	return a.lookupPrincipal(ctx, id)
}

// lookupPrincipal is principal without the freshness check, for callers
// that made it already.
func (a *App) lookupPrincipal(ctx context.Context, id string) (*cachedUser, error) {
	return a.cache.user(id, func() (*policy.Principal, error) {
		if a.storeDown.Load() {
			return nil, errStoreDown
		}
		ctx, cancel := storeRead(ctx)
		defer cancel()
		u, err := a.store.GetUser(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			// Compile a decoy, as a known user is compiled, so that an
			// unknown ID's first request costs what a known one's does.
			policy.Compile(&decoyUser, a.view.Load().roles)
			return nil, nil
		}
		if err != nil {
			a.metrics.storeGetUser.Inc()
			return nil, err
		}
		return policy.Compile(u, a.view.Load().roles), nil
	})
}

// decoyUser is compiled in place of a user the store does not have.
var decoyUser = policy.APIUser{
	ID: "decoy", Org: "decoy",
	Scopes: []policy.Scope{"devices:list", "devices:get"},
	Keys:   []policy.Key{{ID: "0000000000000000"}},
}

// principalByToken returns the compiled user that holds the token with
// hash h, or nil when no user does.
func (a *App) principalByToken(ctx context.Context, h policy.Hash) (*cachedUser, error) {
	if err := a.checkFresh(); err != nil {
		return nil, err
	}
	te, err := a.cache.token(h, func() (string, error) {
		if a.storeDown.Load() {
			return "", errStoreDown
		}
		ctx, cancel := storeRead(ctx)
		defer cancel()
		id, err := a.store.UserIDByTokenHash(ctx, h)
		if errors.Is(err, store.ErrNotFound) {
			return "", nil
		}
		if err != nil {
			a.metrics.storeUserByToken.Inc()
		}
		return id, err
	})
	if err != nil || te.owner == "" {
		return nil, err
	}
	// One lookup, the token's, is enough while its link to the owner's
	// entry holds; otherwise the owner is looked up by ID, and linked.
	cu := a.cache.linked(te)
	if cu == nil {
		if cu, err = a.lookupPrincipal(ctx, te.owner); err != nil || cu == nil || cu.p == nil {
			return nil, err
		}
		a.cache.link(te, cu)
	}
	if !policy.VerifyToken(cu.p.User, h) {
		// The owner no longer holds the token (it was replaced), or this
		// process's copy of the owner is older than the token (another
		// process replaced it, and the sync has not dropped the copy yet).
		// The token is not remembered as unknown: in the second case it is
		// the owner's current one and must work once the copy is dropped.
		// A replaced token costs no store read anyway: its owner entry
		// leads to the cached user.
		return nil, nil
	}
	return cu, nil
}

// cachedCredential returns the user a well-formed credential belongs to
// when the cache alone shows the credential is valid, and nil in every
// other case (a miss, an unknown or wrong credential, a store that cannot
// be followed), which the caller settles with the store. It never does
// I/O, so the gateway may use it before the lockout: a client that has a
// good credential passes even when others behind its address guessed too
// often, at no cost to the store. h is the token's hash, for a bearer
// token.
func (a *App) cachedCredential(cred *policy.Credential, h policy.Hash, now time.Time, hits *cacheHits) *cachedUser {
	if a.freshAt(now) != nil {
		return nil
	}
	switch cred.Kind {
	case policy.BearerToken:
		te, ok := a.cache.findToken(h)
		if !ok {
			return nil
		}
		*hits |= tokenCacheHit
		if te.owner == "" {
			return nil
		}
		// One lookup, the token's, while its link to the owner's entry
		// holds (see principalByToken).
		cu := a.cache.linked(te)
		if cu == nil {
			if cu, ok = a.cache.findUser(te.owner); !ok {
				return nil
			}
			*hits |= userCacheHit
			a.cache.link(te, cu)
		}
		if cu.p == nil || !policy.VerifyToken(cu.p.User, h) {
			return nil
		}
		return cu
	case policy.KeyAndSecret:
		cu, ok := a.cache.findUser(cred.UserID)
		if !ok {
			return nil
		}
		*hits |= userCacheHit
		var u *policy.APIUser
		if cu.p != nil {
			u = cu.p.User
		}
		// Verified even for an unknown ID (u == nil, a dummy comparison),
		// so that a cached unknown ID costs what a cached known one does.
		if _, ok := policy.VerifyKeyAndSecret(u, cred.Key, cred.Secret, now); !ok {
			return nil
		}
		return cu
	}
	return nil
}
