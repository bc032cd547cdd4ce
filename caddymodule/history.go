package caddymodule

import (
	"context"
	"encoding/json"
	"net/url"
	"strconv"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds each API user's change history: the management changes
// made to it (who, what, when, the user before and after), kept in the
// store beside the user so that every node, and the console on any of
// them, shows the same. The store writes an entry in the transaction of the
// change itself, so an acknowledged change always has one. Entries hold the
// user as the management API shows it (UserView): public key and token IDs,
// never a secret or token value. The audit log keeps the same facts for
// log pipelines; the history is for the console's user page.

// withHistory returns a context whose change to an API user the store
// records in the user's history as action, by the actor of ctx.
func (a *App) withHistory(ctx context.Context, action, detail string) context.Context {
	return store.WithHistory(ctx, store.HistoryNote{
		Actor:  actorName(actorFrom(ctx)),
		Action: action,
		Detail: detail,
		View: func(u *policy.APIUser) ([]byte, error) {
			return json.Marshal(viewOf(u))
		},
	})
}

// actorName is who the audit log and the history name for a change: the
// caller's identity, else its address.
func actorName(act Actor) string {
	switch {
	case act.ID != "":
		return act.ID
	case act.ClientIP != "":
		return act.ClientIP
	}
	return "unknown"
}

// HistoryView is one entry of a user's history, as the management API and
// the CLI show it. Before is null for a creation, After for a deletion.
type HistoryView struct {
	Seq    int64           `json:"seq"`
	At     string          `json:"at"`
	By     string          `json:"by"`
	Action string          `json:"action"`
	Detail string          `json:"detail,omitempty"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
}

const defaultHistoryLimit = 50

// UserHistory returns a page of the history of the user id at t, newest
// first, and the cursor of the next (older) page, "" after the last. It
// shows only the entries made while the user lived at t, so an operator
// of one team never sees another's; the history of a deleted user can
// still be read where it lived.
func (a *App) UserHistory(ctx context.Context, t Tenant, id string, q url.Values) ([]HistoryView, string, error) {
	if err := checkUsername(id); err != nil {
		return nil, "", err
	}
	p, err := a.placeOf(t)
	if err != nil {
		return nil, "", err
	}
	for key, values := range q {
		if key != "limit" && key != "cursor" {
			return nil, "", fieldErr(key, "is not a parameter of the history: use limit, cursor")
		}
		if len(values) > 1 {
			return nil, "", fieldErr(key, "is given %d times: give it once", len(values))
		}
	}
	limit := defaultHistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			return nil, "", fieldErr("limit", "%q is not a whole number from 1 to %d", v, maxPageLimit)
		}
		limit = n
	}
	var before int64
	if c := q.Get("cursor"); c != "" {
		pc, err := decodeCursor(c)
		if err == nil && pc.Sort == "history" {
			before, err = strconv.ParseInt(pc.ID, 10, 64)
		}
		if err != nil || before <= 0 {
			return nil, "", fieldErr("cursor", "is not a history cursor this server made: pass the \"next\" value of the previous page as it is")
		}
	}
	// The user, if it exists now, must live at t; a deleted user's entries
	// are judged one by one below.
	if u, err := a.store.GetUser(ctx, id); err == nil && !p.holds(u) {
		return nil, "", p.notFound(id)
	}
	var out []HistoryView
	next := ""
	for {
		entries, err := a.store.ListHistory(ctx, id, before, limit+1)
		if err != nil {
			return nil, "", storeErr(err, nil)
		}
		for _, e := range entries {
			if len(out) == limit {
				// At least one older entry is left.
				next = encodeCursor(pageCursor{Sort: "history", ID: strconv.FormatInt(out[len(out)-1].Seq, 10)})
				break
			}
			if !p.anywhere && !entryAt(e, p) {
				continue
			}
			out = append(out, HistoryView{
				Seq: e.Seq, At: e.At.Format("2006-01-02T15:04:05.000000Z07:00"), By: e.Actor, Action: e.Action, Detail: e.Detail,
				Before: rawOrNull(e.Before), After: rawOrNull(e.After),
			})
		}
		if next != "" || len(entries) <= limit {
			break
		}
		before = entries[len(entries)-1].Seq
	}
	if len(out) == 0 && next == "" {
		if _, err := a.store.GetUser(ctx, id); err != nil {
			return nil, "", storeErr(err, func() error { return p.notFound(id) })
		}
	}
	return out, next, nil
}

// entryAt reports whether the user an entry shows lived at p.
func entryAt(e store.HistoryEntry, p place) bool {
	for _, raw := range [][]byte{e.After, e.Before} {
		if raw == nil {
			continue
		}
		var v struct {
			Org     string `json:"org"`
			Product *int64 `json:"product"`
		}
		if json.Unmarshal(raw, &v) != nil {
			return false
		}
		product := int64(0)
		if v.Product != nil {
			product = *v.Product
		}
		return v.Org == p.org && product == p.product
	}
	return false
}

func rawOrNull(b []byte) json.RawMessage {
	if b == nil {
		return json.RawMessage("null")
	}
	return json.RawMessage(b)
}
