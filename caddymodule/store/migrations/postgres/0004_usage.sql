-- Usage counting, quotas and cluster-wide rate limits.
--
-- usage_hourly and usage_daily count the decisions about each API user, per
-- endpoint ('' when none matched) and outcome ('allowed' or a refusal's
-- reason code), in UTC hours and UTC days: start is the bucket's start and
-- last_at the last decision counted. Gateway nodes add to a bucket
-- (count = count + the node's count), never overwrite it. user_id has no
-- foreign key: usage outlives the user, as its history does. Text sorts
-- byte-wise (COLLATE "C"), as in the SQLite store.
--
-- The primary key finds one user's buckets in order (Usage, and the join
-- from an org's users in TopUsers); the start index serves TopUsers over a
-- range and pruning.

CREATE TABLE usage_hourly (
    user_id  text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    start    timestamptz NOT NULL,
    endpoint text COLLATE "C" NOT NULL DEFAULT '',
    outcome  text COLLATE "C" NOT NULL CHECK (outcome <> ''),
    count    bigint NOT NULL CHECK (count >= 0),
    last_at  timestamptz,
    PRIMARY KEY (user_id, start, endpoint, outcome)
);

CREATE INDEX usage_hourly_start ON usage_hourly (start);

CREATE TABLE usage_daily (
    user_id  text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    start    timestamptz NOT NULL,
    endpoint text COLLATE "C" NOT NULL DEFAULT '',
    outcome  text COLLATE "C" NOT NULL CHECK (outcome <> ''),
    count    bigint NOT NULL CHECK (count >= 0),
    last_at  timestamptz,
    PRIMARY KEY (user_id, start, endpoint, outcome)
);

CREATE INDEX usage_daily_start ON usage_daily (start);

-- Each node's own count of each quota or rate-limit window: kind such as
-- 'quota_day', key such as a user ID, window_at the instant that names the
-- window (the gateway uses its end, so the live windows are those after
-- now), changed_at when the node last raised the count (readers ask for
-- what changed since their last read). A node writes only its own rows,
-- so nodes never wait for each other's row locks, and a count only rises;
-- the cluster's count is the sum over the nodes.
CREATE TABLE usage_counters (
    kind         text COLLATE "C" NOT NULL CHECK (kind <> ''),
    key          text COLLATE "C" NOT NULL CHECK (key <> ''),
    window_at    timestamptz NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    node         text COLLATE "C" NOT NULL CHECK (node <> ''),
    count        bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (kind, key, window_at, node)
);

CREATE INDEX usage_counters_window ON usage_counters (window_at);
CREATE INDEX usage_counters_changed ON usage_counters (changed_at);
