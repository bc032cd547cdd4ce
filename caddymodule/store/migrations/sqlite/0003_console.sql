-- What the console needs: team lists paged by a key (username, friendly
-- name, creation or last use) within one org or product, and each user's
-- change history.
--
-- Each index ends with id, so a page continues after the last user of the
-- previous one in a stable order, however many users are inserted between
-- the two requests.

CREATE INDEX users_team_id ON users (org, product, id);
CREATE INDEX users_team_name ON users (org, product, friendly_name, id);
CREATE INDEX users_team_created ON users (org, product, created_at, id);
CREATE INDEX users_team_last_used ON users (org, product, coalesce(last_used_at, 0), id);

-- One row per management change to an API user, written in the change's
-- own transaction: who (actor), what (action, detail such as a key ID), when
-- (at, Unix nanoseconds), and the user before and after as JSON views that
-- hold no secret or token value. Rows outlive the user, so the history of
-- a deleted user can still be read.
CREATE TABLE user_history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL CHECK (user_id <> ''),
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL DEFAULT '',
    action  TEXT NOT NULL CHECK (action <> ''),
    detail  TEXT NOT NULL DEFAULT '',
    before  TEXT CHECK (before IS NULL OR json_valid(before)),
    after   TEXT CHECK (after IS NULL OR json_valid(after))
) STRICT;

CREATE INDEX user_history_user ON user_history (user_id, seq);
