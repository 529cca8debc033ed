-- Office mail servers registered by client certificate (SHA-256 of its DER, hex): such a
-- server may deliver over MX from wherever it connects, but only mail from its own office.
CREATE TABLE office_server_certs (
    cert_sha256 TEXT PRIMARY KEY,
    mailbox_id  INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
