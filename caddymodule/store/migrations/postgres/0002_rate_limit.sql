-- A per-user request rate limit: rate_limit_requests per rate_limit_window_ns
-- nanoseconds. Zero requests: the user has no limit of its own, and the
-- gateway's rate_limit, if any, applies.

ALTER TABLE users
    ADD COLUMN rate_limit_requests bigint NOT NULL DEFAULT 0 CHECK (rate_limit_requests >= 0),
    ADD COLUMN rate_limit_window_ns bigint NOT NULL DEFAULT 0 CHECK (rate_limit_window_ns >= 0);
