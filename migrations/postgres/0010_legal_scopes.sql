-- Legal users scoped to offices (spec §1: "legal (evidence access, optionally scoped to
-- offices)"). A legal user with rows here sees only evidence whose sender or recipient is
-- one of these mailboxes; one without rows sees all evidence. mailbox_key is the
-- lower-cased address, as evidence.sender_key / recipient_key.
CREATE TABLE legal_scopes (
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    mailbox_key TEXT NOT NULL,
    PRIMARY KEY (user_id, mailbox_key)
);
