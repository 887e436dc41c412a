COPY login_etl_staging (
    message_id, user_id, device_type, masked_ip, masked_device_id,
    locale, app_version, create_date, sent_at
) FROM STDIN (FORMAT BINARY)
