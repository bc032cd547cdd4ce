-- A per-user quota: at most quota_requests allowed requests per calendar
-- quota_period ('day' or 'month', UTC); zero requests: none of its own.
-- allowed_ips: the client networks (CIDRs, JSON text) the user may be used
-- from; '[]' is anywhere.

ALTER TABLE users ADD COLUMN quota_requests INTEGER NOT NULL DEFAULT 0 CHECK (quota_requests >= 0);
ALTER TABLE users ADD COLUMN quota_period TEXT NOT NULL DEFAULT '' CHECK (quota_period IN ('', 'day', 'month'));
ALTER TABLE users ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
