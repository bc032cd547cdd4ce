package store

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/apiusers/caddy-api-users/policy"
)

// How values are kept in SQL columns:
//
//   - times as INTEGER Unix nanoseconds, read back in UTC; NULL is the zero
//     time, so every representable instant, the Unix epoch included,
//     round-trips exactly;
//   - hashes as 32-byte BLOBs; NULL is the zero hash;
//   - lists and maps as JSON text, "[]" and "{}" when empty, read back as nil
//     when empty.

// Integer nanoseconds reach from 1677-09-21 to 2262-04-11.
var (
	minTime = time.Unix(0, -1<<63)
	maxTime = time.Unix(0, 1<<63-1)
)

// encoder turns values into SQL arguments and remembers the first value it
// could not encode, so a long argument list reads as one expression.
type encoder struct{ err error }

func (e *encoder) time(what string, t time.Time) any {
	if t.IsZero() {
		return nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		e.fail(fmt.Errorf("%s %s is outside the range the store keeps (years 1678 to 2262)", what, t.Format(time.RFC3339)))
		return nil
	}
	return t.UnixNano()
}

func (e *encoder) hash(h policy.Hash) any {
	if h.IsZero() {
		return nil
	}
	return h[:]
}

func (e *encoder) json(what string, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		e.fail(fmt.Errorf("encoding %s: %w", what, err))
		return ""
	}
	return string(b)
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// encodeList is a list as JSON, "[]" when empty.
func encodeList[T any](e *encoder, what string, v []T) string {
	if len(v) == 0 {
		return "[]"
	}
	return e.json(what, v)
}

// encodeConstraints is a user's resource constraints as JSON, "{}" when
// empty.
func encodeConstraints(e *encoder, m map[string][]string) string {
	if len(m) == 0 {
		return "{}"
	}
	return e.json("resource constraints", m)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decodeTime reads a nullable nanosecond column.
func decodeTime(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// decodeRateLimit reads the two rate-limit columns; zero requests is no
// limit of the user's own.
func decodeRateLimit(requests, window int64) policy.RateLimit {
	if requests <= 0 {
		return policy.RateLimit{}
	}
	return policy.RateLimit{Requests: int(requests), Window: time.Duration(window)}
}

// decodeHash reads a nullable hash column.
func decodeHash(what string, b []byte) (policy.Hash, error) {
	var h policy.Hash
	switch len(b) {
	case 0:
		return h, nil
	case len(h):
		copy(h[:], b)
		return h, nil
	default:
		return h, fmt.Errorf("%s holds %d bytes, not a 32-byte SHA-256 hash: the store is damaged, restore it from a backup", what, len(b))
	}
}

// decodeList reads a JSON list; an empty list becomes nil.
func decodeList[T any](what, text string) ([]T, error) {
	var v []T
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		return nil, fmt.Errorf("%s is not a JSON list (%w): the store is damaged, restore it from a backup", what, err)
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// decodeConstraints reads resource constraints; an empty map becomes nil,
// and so does each empty list in it, whose key is kept.
func decodeConstraints(what, text string) (map[string][]string, error) {
	var m map[string][]string
	if err := json.Unmarshal([]byte(text), &m); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object of lists (%w): the store is damaged, restore it from a backup", what, err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	for k, v := range m {
		if len(v) == 0 {
			m[k] = nil
		}
	}
	return m, nil
}

// userText is a user's list and map columns as the store keeps them: JSON
// text.
type userText struct {
	scopes, roles, endpoints, proxied, constraints string
}

// decodeUserColumns fills u's lists, constraints and hashes from the
// columns both stores keep the same way. A column that does not decode is
// an error naming the user and the column: a damaged row never becomes a
// user with fewer checks.
func decodeUserColumns(u *policy.APIUser, t userText, tokenHash, secretHash []byte) error {
	what := func(field string) string { return fmt.Sprintf("the %s of API user %q", field, u.ID) }
	var err error
	if u.Scopes, err = decodeList[policy.Scope](what("scopes"), t.scopes); err != nil {
		return err
	}
	if u.Roles, err = decodeList[string](what("roles"), t.roles); err != nil {
		return err
	}
	if u.AllowedEndpoints, err = decodeList[string](what("allowed endpoints"), t.endpoints); err != nil {
		return err
	}
	if u.AllowedProxiedUsers, err = decodeList[string](what("allowed proxied users"), t.proxied); err != nil {
		return err
	}
	if u.ResourceConstraints, err = decodeConstraints(what("resource constraints"), t.constraints); err != nil {
		return err
	}
	if u.TokenHash, err = decodeHash(what("token hash"), tokenHash); err != nil {
		return err
	}
	if u.SecretHash, err = decodeHash(what("secret hash"), secretHash); err != nil {
		return err
	}
	return nil
}
