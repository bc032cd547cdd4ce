// Package policy decides, for one gateway request, whether an API user may
// make it and why not. A decision runs in a fixed order and fails closed at
// every step: the raw request path must be unambiguous (CheckPath), the user
// must be active (not retired, expired or idle-expired), the method and path
// must match exactly one named Endpoint of the Catalog (deny by default), the
// endpoint must be among the user's allowed endpoints, its Scope among the
// user's effective scopes, the {org} and {product} route variables inside the
// user's Tenancy, every resource constraint satisfied, and a proxied user, if
// any, permitted. Each outcome is a Reason with a stable code. Everything here
// is plain, immutable data and pure functions over it: an APIUser is compiled
// once into a Principal, which a cache may keep, and the whole decision for a
// cached user then runs in well under a microsecond without allocating.
// Credentials and their hashes are parsed here too, but storage, caching,
// HTTP, headers, audit logging and metrics live in the caddymodule package,
// which calls Decide and acts on its Decision.
package policy
