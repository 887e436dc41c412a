-- The first rows of user_logins, as an analyst sees them.
SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date
FROM user_logins
LIMIT %(limit)s
