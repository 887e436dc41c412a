-- One user's rows, for `unmask --user-id` (the masks are opened by the caller).
SELECT create_date, device_type, masked_ip, masked_device_id
FROM user_logins
WHERE user_id = %(user_id)s
ORDER BY create_date, device_type, masked_ip, masked_device_id
