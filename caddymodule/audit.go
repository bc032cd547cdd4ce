package caddymodule

import (
	"strconv"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

// Actor kinds of the audit log, after Momentus: an API user acting for
// itself, or on behalf of a proxied user.
const (
	ActorAPIUser           = "api_user"
	ActorProxiedViaAPIUser = "proxied_user_via_api_user"
	ActorOther             = "other"
)

// auditRecord collects what the gateway learnt about a request while
// deciding it. It never holds a credential value, only public IDs.
type auditRecord struct {
	method, path, clientIP string
	credentialID           string
	principal              *policy.Principal
	decision               *policy.Decision
	status                 int
}

// writeAudit writes one record per gateway decision to the logger
// http.handlers.api_users.audit... (the app's "audit" logger), allowed or
// refused, so a security reviewer can replay who reached what.
func (a *App) writeAudit(rec *auditRecord, reason policy.Reason) {
	ce := a.audit.Check(zapcore.InfoLevel, "gateway decision")
	if ce == nil {
		return
	}
	decision := "deny"
	if reason == policy.Allowed {
		decision = "allow"
	}
	fields := make([]zap.Field, 0, 16)
	fields = append(fields,
		zap.String("decision", decision),
		zap.String("reason", reason.Code()),
		zap.Int("status", rec.status),
		zap.String("method", rec.method),
		zap.String("path", rec.path),
		zap.String("client_ip", rec.clientIP),
	)
	if rec.credentialID != "" {
		fields = append(fields, zap.String("credential_id", rec.credentialID))
	}
	actor := ""
	if p := rec.principal; p != nil {
		u := p.User
		actor = ActorAPIUser
		fields = append(fields, zap.String("api_user", u.ID), zap.String("org", u.Org))
		if u.Product != 0 {
			fields = append(fields, zap.String("product", strconv.FormatInt(u.Product, 10)))
		}
	}
	if d := rec.decision; d != nil {
		if d.Endpoint != nil {
			fields = append(fields, zap.String("endpoint", d.Endpoint.Name), zap.String("scope", string(d.Endpoint.Scope)))
		}
		if d.ProxiedUser != "" {
			actor = ActorProxiedViaAPIUser
			fields = append(fields, zap.String("proxied_user", d.ProxiedUser))
		}
	}
	if actor != "" {
		fields = append(fields, zap.String("actor", actor))
	}
	ce.Write(fields...)
}
