-- A per-user quota: at most quota_requests allowed requests per calendar
-- quota_period ('day' or 'month', UTC); zero requests: none of its own.
-- allowed_ips: the client networks (CIDRs, JSON text) the user may be used
-- from; '[]' is anywhere.

ALTER TABLE users
    ADD COLUMN quota_requests bigint NOT NULL DEFAULT 0 CHECK (quota_requests >= 0),
    ADD COLUMN quota_period text NOT NULL DEFAULT '' CHECK (quota_period IN ('', 'day', 'month')),
    ADD COLUMN allowed_ips text NOT NULL DEFAULT '[]';
