COPY user_logins (
    user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
) FROM STDIN (FORMAT BINARY)
