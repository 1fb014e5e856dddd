-- Stream keys are kept only as their SHA-256 digest (`key_digest`, filled since 0001), so a
-- copy of the database or a read token cannot publish. Existing rows keep working: their
-- digest is already stored; only the plaintext goes.
ALTER TABLE streams DROP COLUMN stream_key;
