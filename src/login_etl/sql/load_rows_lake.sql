-- load_rows, plus the lake record of every row it loads, into the outbox:
-- ledgered duplicates load nothing and so get no lake record.
-- Column lists in braces come from login_etl.record (sqlfiles.statement).
WITH fresh AS (
    INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
    SELECT message_id, 'loaded', sent_at FROM login_etl_staging
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), loaded AS (
    INSERT INTO user_logins ({user_logins})
    SELECT {user_logins}
    FROM login_etl_staging JOIN fresh USING (message_id)
)
INSERT INTO login_etl_lake_outbox ({lake})
SELECT {lake}
FROM login_etl_staging JOIN fresh USING (message_id)
