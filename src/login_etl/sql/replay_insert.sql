INSERT INTO user_logins (
    user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
) VALUES (
    %(user_id)s, %(device_type)s, %(masked_ip)s, %(masked_device_id)s,
    %(locale)s, %(app_version)s, %(create_date)s
)
