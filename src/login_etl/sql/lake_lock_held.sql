-- Whether this session still holds the writer lock (the only advisory lock
-- it takes): a session that died has released it, and this query fails.
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
)
