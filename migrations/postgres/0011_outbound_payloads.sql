-- Relay payloads in a table of their own (see the SQLite migration of the same number:
-- there every claim and outcome rewrote the payload with the job's row). A delivered
-- job's payload is deleted with its outcome; queued and failed jobs keep theirs.
-- Invariant: every job not `done` has its payload.
CREATE TABLE outbound_payloads (
    job_id  BIGINT PRIMARY KEY REFERENCES outbound_jobs (id) ON DELETE CASCADE,
    payload BYTEA NOT NULL
);
INSERT INTO outbound_payloads (job_id, payload)
    SELECT id, payload FROM outbound_jobs WHERE state <> 'done';
ALTER TABLE outbound_jobs DROP COLUMN payload;
