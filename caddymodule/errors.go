package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/apiusers/caddy-api-users/caddymodule/store"
	"github.com/apiusers/caddy-api-users/policy"
)

// errorBody is the JSON error shape of the gateway and the management API.
type errorBody struct {
	OK          bool   `json:"ok"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// errorBodies holds each reason's response body, encoded once: refusing a
// request should cost less than allowing one.
var errorBodies = func() [][]byte {
	reasons := policy.Reasons()
	out := make([][]byte, len(reasons))
	for _, r := range reasons {
		b, err := json.Marshal(errorBody{Error: r.Code(), Description: r.Description()})
		if err != nil {
			panic(err)
		}
		out[r] = append(b, '\n')
	}
	return out
}()

var jsonContentType = []string{"application/json; charset=utf-8"}

// writeError writes the JSON error for a decision's reason.
func writeError(w http.ResponseWriter, reason policy.Reason) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = []string{"nosniff"}
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(reason.Status())
	_, _ = w.Write(errorBodies[reason])
}

// writeJSONError writes an error that is not a gateway decision, such as a
// management API validation failure.
func writeJSONError(w http.ResponseWriter, status int, code, description string) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = []string{"no-store"}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: code, Description: description})
}

// FieldError is a validation failure of one field of a management request.
// It becomes a 400 whose message names the field.
type FieldError struct {
	Field   string
	Message string
}

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFoundError says that what a management request names does not exist
// where the request looks for it. It becomes a 404. For API users the
// message is the same whether the user does not exist at all or lives in
// another org or product, so a path never tells one tenant's operator about
// another's users.
type NotFoundError struct{ Message string }

// ConflictError says that a valid request cannot be applied to the current
// state: a taken name, a role still in use, an entry the Caddyfile defines.
// It becomes a 409.
type ConflictError struct{ Message string }

func conflictErr(format string, args ...any) error {
	return &ConflictError{Message: fmt.Sprintf(format, args...)}
}

// PreconditionError is a conditional change (If-Match) whose condition
// does not hold: the user changed since the caller read it.
type PreconditionError struct{ Message string }

// storeErr turns the store's sentinel errors into the management errors
// callers map to statuses; anything else means the store is unavailable.
func storeErr(err error, notFound func() error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound) && notFound != nil:
		return notFound()
	case errors.Is(err, store.ErrConflict):
		return conflictErr("the record changed while this request was writing it; send the request again")
	case errors.Is(err, store.ErrInUse), errors.Is(err, store.ErrExists):
		return &ConflictError{Message: err.Error()}
	}
	return err
}
