-- The transparency log and the evidence records it commits to (spec §4).
-- log_hashes holds the tlog "stored hashes" (every complete subtree's hash, indexed as in
-- Go's sumdb/tlog); tiles and proofs are read from it. log_head is the sequencer row: every
-- append updates it first, which serialises appends across processes; it also holds the
-- latest signed checkpoint (older ones need not be kept: any past tree can be proven from
-- log_hashes, and a checkpoint handed out earlier carries its own signature).

CREATE TABLE log_head (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    size       BIGINT NOT NULL CHECK (size >= 0),
    root       BYTEA NOT NULL,
    checkpoint TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- The empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
INSERT INTO log_head (id, size, root, checkpoint, updated_at)
VALUES (1, 0, decode('E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855', 'hex'), '', 0);

CREATE TABLE log_entries (
    idx   BIGINT PRIMARY KEY CHECK (idx >= 0),
    entry BYTEA NOT NULL
);

CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY CHECK (idx >= 0),
    hash BYTEA NOT NULL
);

CREATE TABLE evidence (
    evidence_id        TEXT PRIMARY KEY,
    log_index          BIGINT NOT NULL UNIQUE REFERENCES log_entries (idx),
    event              TEXT NOT NULL,
    reason             TEXT NOT NULL,
    event_time         BIGINT NOT NULL,
    gateway_message_id TEXT NOT NULL,
    message_id         TEXT,
    sender_key         TEXT NOT NULL,
    recipient_key      TEXT NOT NULL,
    record             BYTEA NOT NULL,
    signature          BYTEA NOT NULL
);
CREATE INDEX evidence_message ON evidence (gateway_message_id, recipient_key);
CREATE INDEX evidence_rfc_message ON evidence (message_id);
CREATE INDEX evidence_sender ON evidence (sender_key, event_time);
CREATE INDEX evidence_recipient ON evidence (recipient_key, event_time);
CREATE INDEX evidence_time ON evidence (event_time);
