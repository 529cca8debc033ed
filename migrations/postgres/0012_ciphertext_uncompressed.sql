-- Ciphertext is stored as it is. PostgreSQL compresses a value of more than ~2 KB with
-- pglz before it moves it out of line (TOAST), and keeps the result only if it saved a
-- quarter: OpenPGP ciphertext and its armour never do, so every relay payload and every
-- encrypted copy was compressed in vain. With 100 KiB messages that was half of the
-- server's CPU (docs/decisions.md, "SMTP path on PostgreSQL"). EXTERNAL: out of line,
-- uncompressed. Applies to rows written from now on. The ALTERs take a short exclusive
-- lock on both tables: rather than queue the running gateway's statements behind a long
-- transaction (a nightly pg_dump), the migration gives up after 5 s and is retried at the
-- next start or `bote migrate`.
SET LOCAL lock_timeout = '5s';
ALTER TABLE outbound_payloads ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE message_copies ALTER COLUMN body SET STORAGE EXTERNAL;
