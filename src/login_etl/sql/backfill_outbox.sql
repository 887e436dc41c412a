-- Loaded rows whose lake records still wait in the outbox (above the mark).
INSERT INTO user_logins (
    user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
)
SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
FROM login_etl_lake_outbox
WHERE create_date = ANY(%(dates)s::date[])
  AND (xid, id) > (%(xid)s::xid8, %(id)s::bigint)
