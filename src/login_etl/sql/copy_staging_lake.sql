COPY login_etl_staging (
    message_id, user_id, device_type, masked_ip, masked_device_id,
    locale, app_version, create_date, sent_at, app_version_raw, extra
) FROM STDIN (FORMAT BINARY)
