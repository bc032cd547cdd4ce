package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
)

// How a node learns what other processes changed.
//
// Every change to the store is committed with a record in its change log,
// numbered without gaps. A node remembers the last number it applied, and
// reads the records after it: every SyncInterval (the poll, which bounds how
// late a change can be enforced), and at once when the store announces a
// commit (PostgreSQL's LISTEN/NOTIFY, over a connection of the node's own,
// which typically makes it milliseconds). Each record drops exactly the
// cache entries it affects: a user change drops that user, a change to
// roles, orgs or products rebuilds the view and drops every user. When the
// records after the node's position are gone (pruned), or the log ends
// before it (a database restored from a backup), the node cannot know what
// changed, so it drops its whole cache. (To notice the latter, a read that
// finds no new record also reads where the log ends: a second, small
// query.)
//
// While the change log cannot be read, the node cannot learn of
// revocations, so it fails closed in two steps: requests that need a store
// read are refused at once (503 store_unavailable), and users already in
// the cache are admitted only until MaxStale has passed since the last
// successful read, after which every API-user request is refused with 503
// too. Nothing is needed to recover: the pool reconnects, the listener
// reconnects with backoff and then reads the log, and the poll reads it
// anyway.

const (
	// storeTimeout bounds one read of the store on the hot path and one
	// poll of the change log, so an unreachable database turns into a 503,
	// not a request that hangs.
	storeTimeout = 2 * time.Second

	// The listening connection is retried after a growing, jittered delay.
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 5 * time.Second

	// MaxStale defaults to staleIntervals sync intervals, and to no less
	// than minDefaultMaxStale, which rides out a database restart.
	staleIntervals     = 10
	minDefaultMaxStale = 5 * time.Second

	// While the store stays unreachable, the failure is logged again at
	// most this often.
	outageLogEvery = 30 * time.Second
)

var (
	// errStoreDown: the last read of the change log failed, so a store
	// read is not even tried.
	errStoreDown = errors.New("the API-user store is unreachable (the last read of its change log failed)")
	// errStoreStale: the change log has not been read for longer than
	// max_stale, so even cached users are refused.
	errStoreStale = errors.New("the API-user store has not been readable for longer than max_stale, so revocations may have been missed")
)

// followChanges keeps the cache in step with the store until ctx is done.
// It is the only caller of syncChanges, so syncs never overlap.
func (a *App) followChanges(ctx context.Context) {
	kick := make(chan struct{}, 1)
	wake := func() {
		select {
		case kick <- struct{}{}:
		default: // a sync is already due, and will see this change too
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if l, ok := a.store.(store.ChangeListener); ok && !a.pollOnly {
		wg.Go(func() { a.listenChanges(ctx, l, wake) })
	}
	t := time.NewTicker(time.Duration(a.SyncInterval))
	defer t.Stop()
	wake() // what open() read may be old by now
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		a.syncOnce(ctx)
	}
}

// syncOnce reads the change log once and records the outcome.
func (a *App) syncOnce(ctx context.Context) {
	// What a successful read shows is the store as of its start.
	start := a.now()
	readCtx, cancel := context.WithTimeout(ctx, storeTimeout)
	err := a.syncChanges(readCtx)
	cancel()
	if err == nil {
		a.lastSync.Store(start.UnixNano())
		if a.storeDown.Swap(false) {
			a.logger.Warn("the API-user store is readable again; requests are decided normally",
				zap.Duration("unreadable_for", start.Sub(a.downSince)))
		}
		return
	}
	if ctx.Err() != nil {
		return // stopping
	}
	a.metrics.storeSyncChanges.Inc()
	if !a.storeDown.Swap(true) {
		a.downSince, a.downLogged = start, start
		a.logger.Error("cannot read the API-user store's change log: requests that need a store read are refused with 503 until it can be read, and cached users are admitted for at most max_stale after the last successful read",
			zap.Duration("max_stale", time.Duration(a.MaxStale)), zap.Error(err))
	} else if start.Sub(a.downLogged) >= outageLogEvery {
		a.downLogged = start
		a.logger.Error("the API-user store's change log is still unreadable",
			zap.Duration("for", start.Sub(a.downSince)), zap.Error(err))
	}
}

// syncChanges applies every change recorded after the last one seen.
func (a *App) syncChanges(ctx context.Context) error {
	for {
		after := a.lastSeq.Load()
		changes, err := a.store.Changes(ctx, after, 1000)
		if err != nil {
			return err
		}
		if len(changes) == 0 {
			// Nothing new; unless the log now ends before this node's
			// position (a database restored from a backup, failed over to
			// a replica that lagged, or a log emptied by hand), in which
			// case the changes numbered up to that position would be
			// skipped when they are made again.
			last, err := a.store.LastChange(ctx)
			if err != nil {
				return err
			}
			if last < after {
				a.logger.Warn("the API-user store's change log ends before the last change this node applied (was the database restored?); dropping the whole cache",
					zap.Int64("applied", after), zap.Int64("log_ends_at", last))
				if err := a.dropCache(ctx); err != nil {
					return err
				}
				a.lastSeq.Store(last)
			}
			return nil
		}
		if changes[0].Seq > after+1 {
			// Sequence numbers have no gaps, so the records after this
			// node's position were pruned before it read them: which
			// users they changed is lost.
			last, err := a.store.LastChange(ctx)
			if err != nil {
				return err
			}
			a.logger.Warn("the API-user store's change log was pruned past this node's position; dropping the whole cache",
				zap.Int64("applied", after), zap.Int64("oldest_kept", changes[0].Seq))
			if err := a.dropCache(ctx); err != nil {
				return err
			}
			a.lastSeq.Store(last)
			continue
		}
		catalogChanged := false
		for _, c := range changes {
			switch c.Kind {
			case store.ChangeUser:
				a.cache.invalidateUser(c.Key)
			default:
				catalogChanged = true
			}
		}
		if catalogChanged {
			if err := a.dropCache(ctx); err != nil {
				return err
			}
		}
		a.lastSeq.Store(changes[len(changes)-1].Seq)
		if len(changes) < 1000 {
			return nil
		}
	}
}

// dropCache rebuilds the view from the store and drops every cached user.
func (a *App) dropCache(ctx context.Context) error {
	if err := a.reloadView(ctx); err != nil {
		return err
	}
	a.cache.invalidateAll()
	return nil
}

// listenChanges keeps a listening connection to the store open, and wakes
// the follower at every announcement and after every (re)connection, since
// announcements made while it was not listening are lost.
func (a *App) listenChanges(ctx context.Context, l store.ChangeListener, wake func()) {
	backoff := listenMinBackoff
	for {
		listening := false
		err := l.ListenChanges(ctx, func() {
			listening = true
			backoff = listenMinBackoff
			wake()
		}, wake)
		if ctx.Err() != nil {
			return
		}
		if listening {
			a.logger.Warn("lost the connection that listens for API-user store changes; reconnecting, and reading the change log every sync_interval meanwhile",
				zap.Error(err))
		} else {
			a.logger.Debug("cannot listen for API-user store changes yet", zap.Duration("retry_in", backoff), zap.Error(err))
		}
		delay := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// checkFresh refuses to decide from the cache once the change log has not
// been read for longer than MaxStale. It applies only while the follower
// runs: the CLI, which has none, reads the store directly.
func (a *App) checkFresh() error {
	if a.maxStale.Load() == 0 {
		return nil
	}
	return a.freshAt(a.now())
}

// freshAt is checkFresh at now, for a caller that has the time already.
func (a *App) freshAt(now time.Time) error {
	maxStale := a.maxStale.Load()
	if maxStale == 0 {
		return nil
	}
	if age := now.UnixNano() - a.lastSync.Load(); age > maxStale {
		return fmt.Errorf("%w: last read %s ago", errStoreStale, time.Duration(age).Round(time.Millisecond))
	}
	return nil
}

// storeRead is the context of one store read on the hot path: bounded by
// storeTimeout, and not cancelled with the request that started it, since
// concurrent requests for the same user wait for the same read.
func storeRead(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
}

// defaultMaxStale is MaxStale when the config sets none.
func defaultMaxStale(syncInterval time.Duration) time.Duration {
	return max(minDefaultMaxStale, staleIntervals*syncInterval)
}
