-- Security findings of the HTTPS probe: read tokens die with their creator's access, and
-- citizens' keys are published only when they opt in. Conventions as in 0001.

-- Who created a token (read tokens come from a member's session); revoking that member's
-- access revokes the tokens too. Backfilled from the audit actor `user:<email>`.
ALTER TABLE credentials ADD COLUMN creator_user_id BIGINT REFERENCES users (id);
UPDATE credentials SET creator_user_id =
    (SELECT u.id FROM users u WHERE 'user:' || u.email = credentials.created_by)
    WHERE created_by LIKE 'user:%';
CREATE INDEX credentials_creator ON credentials (creator_user_id);
CREATE INDEX credentials_mailbox ON credentials (mailbox_id);

-- Whether the unauthenticated directory and WKD show this mailbox's certificate: offices
-- always do, citizens only if they choose to.
ALTER TABLE mailboxes ADD COLUMN published BIGINT NOT NULL DEFAULT 1 CHECK (published IN (0, 1));
UPDATE mailboxes SET published = 0 WHERE kind = 'citizen';

-- When an operator last lifted a user's login throttle (`bote user unlock`): failures
-- counted before it no longer slow the user down.
ALTER TABLE users ADD COLUMN unlocked_at BIGINT;
