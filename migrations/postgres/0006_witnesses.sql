-- Witnesses (C2SP tlog-witness) and attested checkpoints.
-- witness_state: bote as a witness for its peers' logs; per origin the latest checkpoint it
-- cosigned. It only ever moves forward, by a conditional update (compare and set), so two
-- concurrent submissions can never both win.
CREATE TABLE witness_state (
    origin     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL CHECK (size >= 0),
    root       BYTEA NOT NULL,
    checkpoint TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- log_attestations: this gateway's checkpoints with what others said about them: the
-- witnesses' cosignature lines appended to the signed note, and an RFC 3161 time-stamp
-- token over the checkpoint body. Bundles are exported against the newest one.
CREATE TABLE log_attestations (
    size            BIGINT PRIMARY KEY CHECK (size >= 0),
    checkpoint      TEXT NOT NULL,
    cosignatures    BIGINT NOT NULL CHECK (cosignatures >= 0),
    timestamp_token BYTEA,
    created_at      BIGINT NOT NULL
);
