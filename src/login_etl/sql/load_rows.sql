-- Ledger every staged message id not seen before, and load exactly those rows.
WITH fresh AS (
    INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
    SELECT message_id, 'loaded', sent_at FROM login_etl_staging
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
)
INSERT INTO user_logins (
    user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
)
SELECT s.user_id, s.device_type, s.masked_ip, s.masked_device_id,
       s.locale, s.app_version, s.create_date
FROM login_etl_staging AS s JOIN fresh USING (message_id)
