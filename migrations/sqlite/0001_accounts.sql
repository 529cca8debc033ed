-- Accounts: identities, users, second factors, mailboxes, memberships, credentials, audit.
-- Conventions (shared with migrations/postgres): times are unix milliseconds (INTEGER),
-- flags are 0/1 integers, addresses are stored canonical with a lower-cased `*_key` for
-- uniqueness. See docs/ARCHITECTURE.md, "Storage".

CREATE TABLE identities (
    id          INTEGER PRIMARY KEY,
    verified    INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
    method      TEXT CHECK (method IN ('in-person', 'eid', 'qualified-signature')),
    verified_by TEXT,
    verified_at INTEGER,
    CHECK ((verified = 0 AND method IS NULL AND verified_at IS NULL AND verified_by IS NULL)
        OR (verified = 1 AND method IS NOT NULL AND verified_at IS NOT NULL AND verified_by IS NOT NULL))
);

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('citizen', 'staff', 'legal', 'admin')),
    password_hash TEXT NOT NULL,
    notify_email  TEXT,
    identity_id   INTEGER NOT NULL UNIQUE REFERENCES identities (id),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE auth_factors (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('totp')),
    secret         BLOB NOT NULL,
    last_used_step INTEGER,
    created_at     INTEGER NOT NULL,
    UNIQUE (user_id, kind)
);

CREATE TABLE mailboxes (
    id               INTEGER PRIMARY KEY,
    address          TEXT NOT NULL,
    address_key      TEXT NOT NULL UNIQUE,
    kind             TEXT NOT NULL CHECK (kind IN ('citizen', 'office', 'external')),
    display_name     TEXT NOT NULL,
    owner_user_id    INTEGER UNIQUE REFERENCES users (id),
    identity_id      INTEGER NOT NULL REFERENCES identities (id),
    relay_host       TEXT,
    relay_port       INTEGER CHECK (relay_port BETWEEN 1 AND 65535),
    relay_tls        TEXT CHECK (relay_tls IN ('required', 'opportunistic', 'none')),
    cert             BLOB,
    cert_fingerprint TEXT,
    disabled         INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at       INTEGER NOT NULL,
    CHECK ((kind = 'citizen') = (owner_user_id IS NOT NULL)),
    CHECK ((kind = 'external') = (relay_host IS NOT NULL AND relay_port IS NOT NULL
                                  AND relay_tls IS NOT NULL AND cert IS NOT NULL
                                  AND cert_fingerprint IS NOT NULL))
);

CREATE TABLE memberships (
    mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'active')),
    granted_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE credentials (
    id                 INTEGER PRIMARY KEY,
    mailbox_id         INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    scope              TEXT NOT NULL CHECK (scope IN ('send', 'read')),
    token_hash         BLOB NOT NULL UNIQUE,
    client_cert_sha256 TEXT,
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    revoked_at         INTEGER
);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target);
