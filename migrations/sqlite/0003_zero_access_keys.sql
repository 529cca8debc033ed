-- Zero access at rest (spec §5, docs/key-hierarchy.md). Nothing here opens without a user's
-- password, a recovery code or a token secret, none of which is stored.

-- A user's own OpenPGP key: the public certificate in clear (so anyone can wrap a mailbox
-- data key for the user), the secret parts sealed twice: under Argon2id(password, salt) and
-- under HKDF(user recovery code).
CREATE TABLE user_keys (
    user_id              INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    cert                 BLOB NOT NULL,
    fingerprint          TEXT NOT NULL UNIQUE,
    password_salt        BLOB NOT NULL,
    secret_by_password   BLOB NOT NULL,
    secret_by_recovery   BLOB NOT NULL,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
);

-- A mailbox's OpenPGP key: certificate in clear (encrypting needs only it), secret parts
-- sealed under the mailbox's random data key.
CREATE TABLE mailbox_keys (
    mailbox_id    INTEGER PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    cert          BLOB NOT NULL,
    fingerprint   TEXT NOT NULL UNIQUE,
    sealed_secret BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);

-- The data key of a mailbox, wrapped once per way in: OpenPGP-encrypted to a member's user
-- key ('user', holder_id = users.id), or sealed under the mailbox recovery code ('recovery')
-- or a read token ('token', holder_id = credentials.id).
CREATE TABLE key_wraps (
    id          INTEGER PRIMARY KEY,
    mailbox_id  INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    holder_kind TEXT NOT NULL CHECK (holder_kind IN ('user', 'recovery', 'token')),
    holder_id   INTEGER NOT NULL DEFAULT 0,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (mailbox_id, holder_kind, holder_id)
);
CREATE INDEX key_wraps_holder ON key_wraps (holder_kind, holder_id);

-- WKD (draft-koch-openpgp-webkey-service): z-base-32 of SHA-1 of the lower-cased local part,
-- so that a key lookup is an index probe.
ALTER TABLE mailboxes ADD COLUMN wkd_hash TEXT;
CREATE INDEX mailboxes_wkd ON mailboxes (wkd_hash);
