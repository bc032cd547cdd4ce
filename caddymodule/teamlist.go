package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// This file holds the paged team list that the management API's list
// routes, the console and the CLI share. A page is found by a keyset
// cursor, not an offset: the cursor holds the sort key and username of the
// last user of the previous page, and the next page starts right after
// them. So the first page of a team of a million costs what the first page
// of a team of ten does, and users created or deleted between two requests
// never make another user be skipped or listed twice.

// Limits of a page of users.
const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
	maxQueryLen      = 200
)

// TeamQuery is what a list request asks for: a page of at most Limit users
// (0: the default, 100) after Cursor, whose username or friendly name
// contains Q, in State, ordered by Sort.
type TeamQuery struct {
	Limit  int
	Cursor string
	Q      string
	State  string // active, retired, expired, idle_expired; "" any
	Sort   string // username (default), name, created, last_used; "-" before it: descending

	org string // with the zero Tenant: the whole org, its products' users too (the CLI's --org)
}

// teamQueryParams are the query parameters of a list route.
var teamQueryParams = []string{"limit", "cursor", "q", "state", "sort"}

// teamQueryFrom reads a list route's query parameters, refusing unknown,
// repeated and malformed ones with a 400 that names them.
func teamQueryFrom(q url.Values) (TeamQuery, error) {
	var tq TeamQuery
	for name, values := range q {
		if !slices.Contains(teamQueryParams, name) {
			return tq, fieldErr(name, "is not a parameter of this list: use %s", strings.Join(teamQueryParams, ", "))
		}
		if len(values) > 1 {
			return tq, fieldErr(name, "is given %d times: give it once", len(values))
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			return tq, fieldErr("limit", "%q is not a whole number from 1 to %d", v, maxPageLimit)
		}
		tq.Limit = n
	}
	tq.Cursor, tq.Q, tq.State, tq.Sort = q.Get("cursor"), q.Get("q"), q.Get("state"), q.Get("sort")
	return tq, nil
}

// pageCursor is what a cursor holds: the order it was made for, and the
// last user of the page it ends.
type pageCursor struct {
	Sort string `json:"s"`
	ID   string `json:"id"`
	Name string `json:"n,omitempty"`
	Time int64  `json:"t,omitempty"` // Unix nanoseconds; 0: never
}

func encodeCursor(c pageCursor) string {
	data, _ := json.Marshal(c) // plain strings and numbers: cannot fail
	return base64.RawURLEncoding.EncodeToString(data)
}

func decodeCursor(s string) (pageCursor, error) {
	var c pageCursor
	data, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(data, &c)
	}
	if err != nil || c.ID == "" {
		return c, fieldErr("cursor", "is not a cursor this server made: pass the \"next\" value of the previous page as it is, or leave cursor out for the first page")
	}
	return c, nil
}

// filter turns the query into a store filter for the place p, at now.
func (tq TeamQuery) filter(p place, now time.Time) (store.UserFilter, error) {
	f := store.UserFilter{Now: now}
	if !p.anywhere {
		f.Org, f.Product, f.ProductSet = p.org, p.product, true
	} else {
		f.Org = tq.org
	}
	switch {
	case tq.Limit == 0:
		f.Limit = defaultPageLimit
	case tq.Limit < 1 || tq.Limit > maxPageLimit:
		return f, fieldErr("limit", "%d is not a whole number from 1 to %d", tq.Limit, maxPageLimit)
	default:
		f.Limit = tq.Limit
	}
	if n := len([]rune(tq.Q)); n > maxQueryLen || strings.ContainsFunc(tq.Q, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return f, fieldErr("q", "must be at most %d characters without control characters", maxQueryLen)
	}
	f.Query = tq.Q
	switch tq.State {
	case "":
	case "active":
		f.State = store.StateActive
	case "retired":
		f.State = store.StateRetired
	case "expired":
		f.State = store.StateExpired
	case "idle_expired", "idle-expired":
		f.State = store.StateIdleExpired
	default:
		return f, fieldErr("state", "%q is not a state: use active, retired, expired or idle_expired", tq.State)
	}
	sortKey := strings.TrimPrefix(tq.Sort, "-")
	f.Desc = strings.HasPrefix(tq.Sort, "-")
	switch sortKey {
	case "", "username":
		f.Sort = store.SortID
	case "name":
		f.Sort = store.SortName
	case "created":
		f.Sort = store.SortCreated
	case "last_used":
		f.Sort = store.SortLastUsed
	default:
		return f, fieldErr("sort", "%q is not an order: use username, name, created or last_used, with a leading \"-\" for descending", tq.Sort)
	}
	if tq.Cursor != "" {
		c, err := decodeCursor(tq.Cursor)
		if err != nil {
			return f, err
		}
		if c.Sort != canonicalSort(tq.Sort) {
			return f, fieldErr("cursor", "was made for sort=%s, not sort=%s: keep the sort of the first page, or leave cursor out to start again", c.Sort, canonicalSort(tq.Sort))
		}
		f.After, f.AfterName = c.ID, c.Name
		if c.Time != 0 {
			f.AfterTime = time.Unix(0, c.Time).UTC()
		}
	}
	return f, nil
}

// canonicalSort names an order one way, for the cursor.
func canonicalSort(s string) string {
	desc := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		s = "username"
	}
	if desc {
		return "-" + s
	}
	return s
}

// cursorAfter is the cursor of the page that ends with u.
func cursorAfter(u *policy.APIUser, sort string) string {
	c := pageCursor{Sort: canonicalSort(sort), ID: u.ID}
	switch strings.TrimPrefix(c.Sort, "-") {
	case "name":
		c.Name = u.FriendlyName
	case "created":
		c.Time = u.CreatedAt.UnixNano()
	case "last_used":
		if !u.LastUsedAt.IsZero() {
			c.Time = u.LastUsedAt.UnixNano()
		}
	}
	return encodeCursor(c)
}

// ListTeamPage returns one page of the users at t (the zero Tenant:
// everyone), and the cursor of the next page, "" after the last.
func (a *App) ListTeamPage(ctx context.Context, t Tenant, tq TeamQuery) ([]*policy.APIUser, string, error) {
	p, err := a.placeOf(t)
	if err != nil {
		return nil, "", err
	}
	f, err := tq.filter(p, a.now())
	if err != nil {
		return nil, "", err
	}
	limit := f.Limit
	f.Limit++ // one more, to know whether there is a next page
	users, err := a.store.ListUsers(ctx, f)
	if err != nil {
		return nil, "", storeErr(err, nil)
	}
	next := ""
	if len(users) > limit {
		users = users[:limit]
		// The cursor holds the store's sort key, not the fresher last-seen
		// time withLastSeen puts in the view.
		next = cursorAfter(users[limit-1], tq.Sort)
	}
	for _, u := range users {
		a.withLastSeen(u)
	}
	return users, next, nil
}

// pageOf returns the page of items after the cursor (the name of the last
// item of the previous page) of at most limit, and the next cursor: the
// list routes of roles, orgs and products, which the process holds in
// memory, page like teams, in the order they list.
func pageOf[T any](items []T, name func(T) string, q url.Values) ([]T, *string, error) {
	for key, values := range q {
		if key != "limit" && key != "cursor" {
			return nil, nil, fieldErr(key, "is not a parameter of this list: use limit, cursor")
		}
		if len(values) > 1 {
			return nil, nil, fieldErr(key, "is given %d times: give it once", len(values))
		}
	}
	limit := defaultPageLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageLimit {
			return nil, nil, fieldErr("limit", "%q is not a whole number from 1 to %d", v, maxPageLimit)
		}
		limit = n
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		pc, err := decodeCursor(c)
		if err != nil {
			return nil, nil, err
		}
		i := slices.IndexFunc(items, func(it T) bool { return name(it) == pc.ID })
		if i < 0 {
			return nil, nil, fieldErr("cursor", "names %q, which is no longer listed: leave cursor out to start again", pc.ID)
		}
		start = i + 1
	}
	end := min(start+limit, len(items))
	page := items[start:end]
	if end < len(items) {
		next := encodeCursor(pageCursor{Sort: "name", ID: name(page[len(page)-1])})
		return page, &next, nil
	}
	return page, nil, nil
}

// nextCursor is a list's "next": the cursor, or null after the last page.
func nextCursor(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
