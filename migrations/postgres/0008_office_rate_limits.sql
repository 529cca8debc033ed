-- Per-mailbox send rates for offices (spec §2: offices get configurable rate limits instead
-- of the citizen quota). A missing row or a NULL column means the configured default
-- (limits.office_messages_per_hour, limits.office_recipients_per_hour); 0 means unlimited.
CREATE TABLE office_rate_limits (
    mailbox_id          BIGINT PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
    messages_per_hour   BIGINT CHECK (messages_per_hour >= 0),
    recipients_per_hour BIGINT CHECK (recipients_per_hour >= 0)
);
