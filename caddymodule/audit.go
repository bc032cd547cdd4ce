package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/apiusers/caddy-api-users/policy"
)

// Actor kinds of the audit log, after Momentus, whose audit log always
// shows whether an API user was involved: an API user acting for itself,
// an API user acting on behalf of a proxied user, or traffic the gateway
// passed through without an API-user credential (pass_through).
const (
	ActorAPIUser           = "api_user"
	ActorProxiedViaAPIUser = "proxied_user_via_api_user"
	ActorOther             = "other"
)

// auditRecord collects what the gateway learnt about a request while
// deciding it. It never holds a credential value, only public IDs.
type auditRecord struct {
	start                  time.Time
	took                   time.Duration // from start to the decision
	cacheHits              cacheHits     // of the cached-credential lookup
	method, path, clientIP string
	credentialID           string
	principal              *policy.Principal
	endpoint               *policy.Endpoint // the catalog's match, if any
	product                string           // the principal's product ID, when known
	proxiedUser            string           // the valid proxied-user ID the request named, if any
	actingFor              string           // the proxied user an allowed request acts for
	passThrough            bool
	status                 int
}

// writeAuditRecord writes the audit record of one gateway decision, allowed or
// refused, to the logger http.handlers.api_users.audit, so a security
// reviewer can replay who reached what, as whom, and why not. Every record
// has the same fields, empty when they do not apply:
//
//   - decision: "allow" (forwarded) or "deny".
//   - reason: the policy reason's code ("allowed", or why the request was
//     refused, as in the error body), or "pass_through".
//   - status: the status the gateway answered with; 200 for a forwarded
//     request, whose own response status is in Caddy's access log.
//   - actor: "api_user", "proxied_user_via_api_user" (an allowed request on
//     behalf of a proxied user), "other" (passed through without an
//     API-user credential), or "" when no API user was authenticated.
//   - api_user, org, product: the authenticated API user, its org, and its
//     product ID when it is product-scoped.
//   - proxied_user: the proxied user the request named, when an API user
//     was authenticated and the ID is valid, whether allowed or not; the
//     actor says whether the request was made on its behalf.
//   - credential_id: the public ID of the presented token ("at_" and 12 hex
//     digits of its hash) or key (its 16 hex digit ID), never the value;
//     set as soon as a well-formed credential was read, even when
//     authentication then failed.
//   - method, path (raw, as the client sent it, without the query),
//     endpoint and scope (when the catalog matched), client_ip.
//
// The record is built from zap fields in an array the caller owns (the
// queue's writer keeps one), with no map or formatting, and nothing at all
// is built when the logger is disabled. The record's time is the decision's,
// not the write's, since the queue writes it a little later. (zap's cores
// encode the fields during Write and keep no reference.)
func writeAuditRecord(sink *auditSink, rec *auditRecord, reason policy.Reason, fp *[auditFieldCount]zap.Field) {
	ce := sink.core.Check(zapcore.Entry{
		LoggerName: sink.name,
		Time:       rec.start,
		Level:      zapcore.InfoLevel,
		Message:    "gateway decision",
	}, nil)
	if ce == nil {
		return
	}
	decision, code := "deny", reason.Code()
	if reason == policy.Allowed {
		decision = "allow"
	}
	var actor, apiUser, org, product, proxiedUser, endpoint, scope string
	switch {
	case rec.passThrough:
		decision, code, actor = "allow", passThroughCode, ActorOther
	case rec.principal != nil:
		u := rec.principal.User
		actor, apiUser, org, product, proxiedUser = ActorAPIUser, u.ID, u.Org, rec.product, rec.proxiedUser
		if product == "" && u.Product != 0 {
			product = strconv.FormatInt(u.Product, 10)
		}
	}
	if ep := rec.endpoint; ep != nil {
		endpoint, scope = ep.Name, string(ep.Scope)
	}
	if rec.actingFor != "" {
		actor = ActorProxiedViaAPIUser
	}
	fp[0] = zap.String("decision", decision)
	fp[1] = zap.String("reason", code)
	fp[2] = zap.Int("status", rec.status)
	fp[3] = zap.String("actor", actor)
	fp[4] = zap.String("api_user", apiUser)
	fp[5] = zap.String("org", org)
	fp[6] = zap.String("product", product)
	fp[7] = zap.String("proxied_user", proxiedUser)
	fp[8] = zap.String("credential_id", rec.credentialID)
	fp[9] = zap.String("method", rec.method)
	fp[10] = zap.String("path", rec.path)
	fp[11] = zap.String("endpoint", endpoint)
	fp[12] = zap.String("scope", scope)
	fp[13] = zap.String("client_ip", rec.clientIP)
	ce.Write(fp[:]...)
	*fp = [auditFieldCount]zap.Field{} // drop the references
}

// writeAudit audits one gateway decision: through the app's queue once the
// app runs, or at once (the CLI, a handler provisioned outside a running
// app).
func (a *App) writeAudit(sink *auditSink, rec *auditRecord, reason policy.Reason) {
	if q := a.auditQ.Load(); q != nil {
		q.add(sink, rec, reason)
		return
	}
	sink.count(rec, reason)
	fp := auditFieldPool.Get().(*[auditFieldCount]zap.Field)
	writeAuditRecord(sink, rec, reason, fp)
	auditFieldPool.Put(fp)
}

// auditFieldCount is how many fields a gateway record has.
const auditFieldCount = 14

// auditFieldPool recycles the field arrays of records written without the
// queue: passed to ce.Write, a fresh array would escape to the heap, a
// kilobyte per record.
var auditFieldPool = sync.Pool{New: func() any { return new([auditFieldCount]zap.Field) }}

// checkAuditLogName validates a handler's audit_log name.
func checkAuditLogName(name string) error {
	ok := name != "" && len(name) <= 64
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_'
	}
	if !ok {
		return fmt.Errorf("audit_log %q: give a name of up to 64 lowercase letters, digits and '_', such as partners", name)
	}
	return nil
}

// auditWritten follows a record written straight to the audit logger (a
// management record, which must be written before the change is
// acknowledged): it hands what the buffered audit writers hold to the
// kernel, and in sync mode syncs the audit log to disk.
func (a *App) auditWritten() {
	err := flushAuditWriters()
	if a.Audit.Mode == AuditModeSync {
		if serr := a.audit.Sync(); serr != nil && !isNotSyncable(serr) {
			err = errors.Join(err, serr)
		}
	}
	if err != nil {
		a.logger.Error("writing a management audit record", zap.Error(err))
	}
}

// productLabel is the product ID as text, or "" for an org user.
func productLabel(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}

// auditUserChange writes the audit record of a change to an API user:
// who (the actor), what (action), to whom, and the user before and after
// as views, which hold no secret or token value, only public IDs. extra
// are more string fields as key, value pairs, such as the key ID.
func (a *App) auditUserChange(ctx context.Context, action string, before, after *policy.APIUser, extra ...string) {
	u := after
	if u == nil {
		u = before
	}
	fields := []zap.Field{zap.String("api_user", u.ID), zap.String("org", u.Org)}
	if u.Product != 0 {
		fields = append(fields, zap.String("product", productLabel(u.Product)))
	}
	if before != nil {
		fields = append(fields, zap.Any("before", viewOf(before)))
	}
	if after != nil {
		fields = append(fields, zap.Any("after", viewOf(after)))
	}
	for i := 0; i+1 < len(extra); i += 2 {
		fields = append(fields, zap.String(extra[i], extra[i+1]))
	}
	a.auditChange(ctx, action, fields...)
}

// auditChange writes one management audit record to the logger
// http.handlers.api_users.audit, beside the gateway's decisions. Its "by"
// field names the caller: the identity the admin handler's actor option
// resolved, or the client address when no authentication handler named
// one. ("actor" is kept for the gateway records' actor kind.)
func (a *App) auditChange(ctx context.Context, action string, fields ...zap.Field) {
	act := actorFrom(ctx)
	who := actorName(act)
	all := make([]zap.Field, 0, len(fields)+3)
	all = append(all, zap.String("by", who), zap.String("action", action))
	all = append(all, fields...)
	if act.ClientIP != "" {
		all = append(all, zap.String("client_ip", act.ClientIP))
	}
	a.audit.Info("management change", all...)
	a.auditWritten()
}

// auditRefusedManagement writes the audit record of a management request
// refused before any route ran (an API user's, a cross-site write): the
// reason code, what fields says about the caller, and the request.
func (a *App) auditRefusedManagement(r *http.Request, reason string, fields ...zap.Field) {
	all := make([]zap.Field, 0, len(fields)+4)
	all = append(all, fields...)
	all = append(all, zap.String("reason", reason), zap.String("method", r.Method),
		zap.String("path", r.URL.EscapedPath()), zap.String("client_ip", clientIP(r)))
	a.audit.Info("management request refused", all...)
	a.auditWritten()
}
