-- The first schema of the SQLite store.
--
-- Times are INTEGER Unix nanoseconds in UTC; NULL is the zero time ("never").
-- Hashes are 32-byte SHA-256 BLOBs; NULL is the zero hash ("not set"), which
-- also lets any number of users have no token under the UNIQUE constraint.
-- Lists and maps are JSON text, '[]' or '{}' when empty.

CREATE TABLE orgs (
    id   TEXT PRIMARY KEY CHECK (id <> ''),
    slug TEXT UNIQUE CHECK (slug IS NULL OR slug <> '')
) STRICT;

CREATE TABLE products (
    id   INTEGER PRIMARY KEY CHECK (id > 0),
    slug TEXT UNIQUE CHECK (slug IS NULL OR slug <> ''),
    org  TEXT NOT NULL REFERENCES orgs (id)
) STRICT;

CREATE INDEX products_org ON products (org);

CREATE TABLE users (
    id                    TEXT PRIMARY KEY CHECK (id <> ''),
    org                   TEXT NOT NULL REFERENCES orgs (id),
    product               INTEGER NOT NULL DEFAULT 0 CHECK (product >= 0),
    friendly_name         TEXT NOT NULL DEFAULT '',
    description           TEXT NOT NULL DEFAULT '',
    scopes                TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
    roles                 TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(roles)),
    allowed_endpoints     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allowed_endpoints)),
    allow_proxied_users   INTEGER NOT NULL DEFAULT 0 CHECK (allow_proxied_users IN (0, 1)),
    allowed_proxied_users TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(allowed_proxied_users)),
    resource_constraints  TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(resource_constraints)),
    retired               INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1)),
    expires_at            INTEGER,
    idle_timeout_ns       INTEGER NOT NULL DEFAULT 0,
    created_at            INTEGER,
    updated_at            INTEGER,
    last_used_at          INTEGER,
    version               INTEGER NOT NULL DEFAULT 1 CHECK (version > 0),
    token_hash            BLOB UNIQUE CHECK (token_hash IS NULL OR length(token_hash) = 32),
    token_id              TEXT NOT NULL DEFAULT '',
    secret_hash           BLOB CHECK (secret_hash IS NULL OR length(secret_hash) = 32)
) STRICT;

CREATE INDEX users_org_product ON users (org, product);
CREATE INDEX users_product ON users (product);

-- A user's Keys, in the order the user lists them (pos).
CREATE TABLE keys (
    id         TEXT PRIMARY KEY CHECK (id <> ''),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pos        INTEGER NOT NULL,
    hash       BLOB CHECK (hash IS NULL OR length(hash) = 32),
    created_at INTEGER,
    expires_at INTEGER,
    UNIQUE (user_id, pos)
) STRICT;

CREATE TABLE roles (
    name        TEXT PRIMARY KEY CHECK (name <> ''),
    description TEXT NOT NULL DEFAULT '',
    scopes      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes))
) STRICT;

-- One row per committed mutation, so other processes can invalidate their
-- caches. AUTOINCREMENT: a sequence number is never reused, even after the
-- newest rows were deleted.
CREATE TABLE changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    at   INTEGER NOT NULL
) STRICT;

CREATE INDEX changes_at ON changes (at);
