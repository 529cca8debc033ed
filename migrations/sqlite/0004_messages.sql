-- The message core (spec §2, §3, §5): messages, per-mailbox encrypted copies, outbound relay
-- jobs, and login sessions. Bodies and subjects exist here only inside `body` blobs, which
-- are OpenPGP messages to a mailbox certificate; everything else is the cleartext metadata
-- that evidence needs anyway (docs/key-hierarchy.md, "What stays in clear").

CREATE TABLE messages (
    gateway_id             TEXT PRIMARY KEY,
    message_id             TEXT,
    sender                 TEXT NOT NULL,
    sender_key             TEXT NOT NULL,
    channel                TEXT NOT NULL CHECK (channel IN ('web', 'api', 'smtp')),
    auth_level             TEXT NOT NULL CHECK (auth_level IN ('none', 'normal', 'high')),
    authoritative          INTEGER NOT NULL CHECK (authoritative IN (0, 1)),
    personal               INTEGER NOT NULL CHECK (personal IN (0, 1)),
    retrieval_confirmation INTEGER NOT NULL CHECK (retrieval_confirmation IN (0, 1)),
    end_to_end             INTEGER NOT NULL CHECK (end_to_end IN (0, 1)),
    size                   INTEGER NOT NULL,
    sha256                 TEXT NOT NULL,
    recipients             INTEGER NOT NULL,
    created_at             INTEGER NOT NULL
);
CREATE INDEX messages_sender ON messages (sender_key, created_at);
CREATE INDEX messages_message_id ON messages (message_id);

-- One encrypted copy per recipient mailbox ('inbox') and the sender's own ('sent').
-- `opened_at` is set only where opening is evidence (ContentHandover): a citizen's reading
-- is otherwise never recorded.
CREATE TABLE message_copies (
    id          TEXT PRIMARY KEY,
    gateway_id  TEXT NOT NULL REFERENCES messages (gateway_id) ON DELETE CASCADE,
    mailbox_id  INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folder      TEXT NOT NULL CHECK (folder IN ('inbox', 'sent')),
    recipient   TEXT NOT NULL,
    body        BLOB NOT NULL,
    opened_at   INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX message_copies_mailbox ON message_copies (mailbox_id, folder, created_at);
CREATE INDEX message_copies_gateway ON message_copies (gateway_id);

-- Durable relay jobs for external offices (the SMTP worker claims them by lease).
-- `payload` is the complete RFC 3156 PGP/MIME message, ready to send.
CREATE TABLE outbound_jobs (
    id               INTEGER PRIMARY KEY,
    gateway_id       TEXT NOT NULL REFERENCES messages (gateway_id),
    mailbox_id       INTEGER NOT NULL REFERENCES mailboxes (id),
    recipient        TEXT NOT NULL,
    payload          BLOB NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX outbound_jobs_due ON outbound_jobs (state, due_at);

-- Sessions: the user key sealed under a secret that only the client holds (its bearer
-- token); `token_hash` is SHA-256 of that token, so a database dump opens nothing.
CREATE TABLE sessions (
    token_hash      BLOB PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    auth_level      TEXT NOT NULL CHECK (auth_level IN ('normal', 'high')),
    sealed_user_key BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

-- A TOTP factor is usable once confirmed with a first valid code.
ALTER TABLE auth_factors ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1));
