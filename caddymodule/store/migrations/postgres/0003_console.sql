-- What the console needs: team lists paged by a key (username, friendly
-- name, creation or last use) within one org or product, and each user's
-- change history.
--
-- Each index ends with id, so a page continues after the last user of the
-- previous one in a stable order, however many users are inserted between
-- the two requests. Friendly names sort byte-wise (COLLATE "C"), as in the
-- SQLite store, so a cursor means the same on both.

CREATE INDEX users_team_id ON users (org, product, id);
CREATE INDEX users_team_name ON users (org, product, (friendly_name COLLATE "C"), id);
CREATE INDEX users_team_created ON users (org, product, created_at, id);
CREATE INDEX users_team_last_used ON users (org, product, (coalesce(last_used_at, '-infinity')), id);

-- One row per management change to an API user, written in the change's
-- own transaction: who (actor), what (action, detail such as a key ID), when,
-- and the user before and after as JSON views that hold no secret or token
-- value. Rows outlive the user, so the history of a deleted user can still
-- be read.
CREATE TABLE user_history (
    seq     bigserial PRIMARY KEY,
    user_id text COLLATE "C" NOT NULL CHECK (user_id <> ''),
    at      timestamptz NOT NULL,
    actor   text NOT NULL DEFAULT '',
    action  text NOT NULL CHECK (action <> ''),
    detail  text NOT NULL DEFAULT '',
    before  jsonb,
    after   jsonb
);

CREATE INDEX user_history_user ON user_history (user_id, seq);
