UPDATE user_logins
SET masked_ip = %(masked_ip)s, masked_device_id = %(masked_device_id)s
WHERE ctid = %(key)s::tid
