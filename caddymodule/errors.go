package caddymodule

import (
	"encoding/json"
	"net/http"

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
