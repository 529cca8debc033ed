-- PostgreSQL only (its migration of the same number stores ciphertext uncompressed);
-- SQLite never compresses. Kept so that both backends count the same migrations.
SELECT 1;
