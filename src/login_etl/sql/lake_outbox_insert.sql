-- One lake record into the outbox (a replayed rejection that loads now).
INSERT INTO login_etl_lake_outbox (
    message_id, sent_at, create_date, user_id, device_type, masked_ip, masked_device_id,
    locale, app_version, app_version_raw, extra
) VALUES (
    %(message_id)s, %(sent_at)s, %(create_date)s, %(user_id)s, %(device_type)s,
    %(masked_ip)s, %(masked_device_id)s, %(locale)s, %(app_version)s,
    %(app_version_raw)s, %(extra)s
)
