-- load_rows, plus the lake record of every row it loads, into the outbox:
-- ledgered duplicates load nothing and so get no lake record.
WITH fresh AS (
    INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
    SELECT message_id, 'loaded', sent_at FROM login_etl_staging
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), loaded AS (
    INSERT INTO user_logins (
        user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
    )
    SELECT s.user_id, s.device_type, s.masked_ip, s.masked_device_id,
           s.locale, s.app_version, s.create_date
    FROM login_etl_staging AS s JOIN fresh USING (message_id)
)
INSERT INTO login_etl_lake_outbox (
    message_id, sent_at, create_date, user_id, device_type, masked_ip, masked_device_id,
    locale, app_version, app_version_raw, extra
)
SELECT s.message_id, s.sent_at, s.create_date, s.user_id, s.device_type, s.masked_ip,
       s.masked_device_id, s.locale, s.app_version, s.app_version_raw, s.extra
FROM login_etl_staging AS s JOIN fresh USING (message_id)
