-- Relay payloads in a table of their own. In outbound_jobs, every claim and every outcome
-- (state, lease, attempts) rewrote the whole row, and in SQLite that is the payload's
-- overflow pages too: a 100 KiB message's 137 KiB PGP/MIME was written to the WAL three
-- times. A delivered job's payload is deleted with its outcome (the office has it, the
-- evidence keeps its hash); queued and failed jobs keep theirs for `bote queue retry`.
-- Invariant: every job not `done` has its payload.
CREATE TABLE outbound_payloads (
    job_id  INTEGER PRIMARY KEY REFERENCES outbound_jobs (id) ON DELETE CASCADE,
    payload BLOB NOT NULL
);
INSERT INTO outbound_payloads (job_id, payload)
    SELECT id, payload FROM outbound_jobs WHERE state <> 'done';
ALTER TABLE outbound_jobs DROP COLUMN payload;
