-- A user's credentials version, raised by every password change, and the version a
-- session was opened under: a session is valid only while they agree. A login whose
-- password check straddled a password change (its session inserted after the change
-- deleted the user's sessions) would otherwise live on for its twelve hours.
ALTER TABLE users ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 0;
