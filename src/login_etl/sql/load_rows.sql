-- Ledger every staged message id not seen before, and load exactly those rows.
-- Column lists in braces come from login_etl.record (sqlfiles.statement).
WITH fresh AS (
    INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
    SELECT message_id, 'loaded', sent_at FROM login_etl_staging
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
)
INSERT INTO user_logins ({user_logins})
SELECT {user_logins}
FROM login_etl_staging JOIN fresh USING (message_id)
