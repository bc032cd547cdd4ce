-- The first schema of the PostgreSQL store: the same tables as the SQLite
-- store, in PostgreSQL's own types.
--
-- Times are timestamptz (microseconds); NULL is the zero time ("never").
-- Hashes are 32-byte SHA-256 bytea; NULL is the zero hash ("not set"), which
-- also lets any number of users have no token under the UNIQUE constraint.
-- Lists and maps are jsonb, '[]' or '{}' when empty.
--
-- IDs and names use the "C" collation whatever the database's default is, so
-- that "ordered by ID" and the ListUsers cursor (id > $after) follow byte
-- order, as in SQLite and in Go, and do not change with the server's locale.

CREATE TABLE orgs (
    id   text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    slug text COLLATE "C" UNIQUE CHECK (slug IS NULL OR slug <> '')
);

CREATE TABLE products (
    id   bigint PRIMARY KEY CHECK (id > 0),
    slug text COLLATE "C" UNIQUE CHECK (slug IS NULL OR slug <> ''),
    org  text COLLATE "C" NOT NULL REFERENCES orgs (id)
);

CREATE INDEX products_org ON products (org);

CREATE TABLE users (
    id                    text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    org                   text COLLATE "C" NOT NULL REFERENCES orgs (id),
    product               bigint NOT NULL DEFAULT 0 CHECK (product >= 0),
    friendly_name         text NOT NULL DEFAULT '',
    description           text NOT NULL DEFAULT '',
    scopes                jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(scopes) = 'array'),
    roles                 jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(roles) = 'array'),
    allowed_endpoints     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(allowed_endpoints) = 'array'),
    allow_proxied_users   boolean NOT NULL DEFAULT false,
    allowed_proxied_users jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(allowed_proxied_users) = 'array'),
    resource_constraints  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(resource_constraints) = 'object'),
    retired               boolean NOT NULL DEFAULT false,
    expires_at            timestamptz,
    idle_timeout_ns       bigint NOT NULL DEFAULT 0 CHECK (idle_timeout_ns >= 0),
    created_at            timestamptz,
    updated_at            timestamptz,
    last_used_at          timestamptz,
    version               bigint NOT NULL DEFAULT 1 CHECK (version > 0),
    token_hash            bytea UNIQUE CHECK (token_hash IS NULL OR length(token_hash) = 32),
    token_id              text NOT NULL DEFAULT '',
    secret_hash           bytea CHECK (secret_hash IS NULL OR length(secret_hash) = 32)
);

CREATE INDEX users_org_product ON users (org, product);
CREATE INDEX users_product ON users (product);

-- A user's Keys, in the order the user lists them (pos). The UNIQUE
-- constraint's index also finds a user's keys.
CREATE TABLE keys (
    id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    pos        integer NOT NULL,
    hash       bytea CHECK (hash IS NULL OR length(hash) = 32),
    created_at timestamptz,
    expires_at timestamptz,
    UNIQUE (user_id, pos)
);

CREATE TABLE roles (
    name        text COLLATE "C" PRIMARY KEY CHECK (name <> ''),
    description text NOT NULL DEFAULT '',
    scopes      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(scopes) = 'array')
);

-- One row per committed mutation, so every node can invalidate its cache.
-- seq is not a sequence: a writer takes the store's write lock and appends
-- max(seq) + 1, so sequence numbers are gapless and become visible in
-- order (a PostgreSQL sequence hands out numbers that commit out of order,
-- and a follower could skip a change that commits after a later one). A
-- gap therefore always means records were pruned. The newest record is
-- never pruned, so a number is never reused.
CREATE TABLE changes (
    seq  bigint PRIMARY KEY CHECK (seq > 0),
    kind text NOT NULL,
    key  text NOT NULL,
    at   timestamptz NOT NULL
);

CREATE INDEX changes_at ON changes (at);
