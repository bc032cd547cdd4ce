-- Usage counting, quotas and cluster-wide rate limits.
--
-- usage_hourly and usage_daily count the decisions about each API user, per
-- endpoint ('' when none matched) and outcome ('allowed' or a refusal's
-- reason code), in UTC hours and UTC days: start is the bucket's start and
-- last_at the last decision counted, both Unix nanoseconds. Gateway nodes
-- add to a bucket (count = count + the node's count), never overwrite it.
-- user_id has no foreign key: usage outlives the user, as its history does.
-- The primary key finds one user's buckets in order; the start index serves
-- the rankings of an org's users and pruning.

CREATE TABLE usage_hourly (
    user_id  TEXT NOT NULL CHECK (user_id <> ''),
    start    INTEGER NOT NULL,
    endpoint TEXT NOT NULL DEFAULT '',
    outcome  TEXT NOT NULL CHECK (outcome <> ''),
    count    INTEGER NOT NULL CHECK (count >= 0),
    last_at  INTEGER,
    PRIMARY KEY (user_id, start, endpoint, outcome)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_hourly_start ON usage_hourly (start);

CREATE TABLE usage_daily (
    user_id  TEXT NOT NULL CHECK (user_id <> ''),
    start    INTEGER NOT NULL,
    endpoint TEXT NOT NULL DEFAULT '',
    outcome  TEXT NOT NULL CHECK (outcome <> ''),
    count    INTEGER NOT NULL CHECK (count >= 0),
    last_at  INTEGER,
    PRIMARY KEY (user_id, start, endpoint, outcome)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_daily_start ON usage_daily (start);

-- Each node's own count of each quota or rate-limit window: kind such as
-- 'quota_day', key such as a user ID, window_at the instant that names the
-- window (the gateway uses its end, so the live windows are those after
-- now), changed_at when the node last raised the count (readers ask for
-- what changed since their last read). A node writes only its own rows,
-- so nodes never wait for each other's row locks, and a count only rises;
-- the cluster's count is the sum over the nodes.
CREATE TABLE usage_counters (
    kind         TEXT NOT NULL CHECK (kind <> ''),
    key          TEXT NOT NULL CHECK (key <> ''),
    window_at    INTEGER NOT NULL,
    changed_at   INTEGER NOT NULL DEFAULT 0,
    node         TEXT NOT NULL CHECK (node <> ''),
    count        INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (kind, key, window_at, node)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_counters_window ON usage_counters (window_at);
CREATE INDEX usage_counters_changed ON usage_counters (changed_at);
