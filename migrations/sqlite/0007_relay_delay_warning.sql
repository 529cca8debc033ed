-- When the sender was warned that relaying a job takes long (at half the relay expiry);
-- a warning is a notice in the sender's view, not evidence.
ALTER TABLE outbound_jobs ADD COLUMN warned_at INTEGER;
