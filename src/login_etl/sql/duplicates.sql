-- Masked device ids and IPs seen in more than one login. Masking is
-- deterministic (one key, one column: equal values give equal masks), so
-- duplicates are found without ever seeing the plaintext.
SELECT 'device_id' AS field, masked_device_id AS masked_value, count(*) AS logins
FROM user_logins
GROUP BY masked_device_id
HAVING count(*) > 1
UNION ALL
SELECT 'ip', masked_ip, count(*)
FROM user_logins
GROUP BY masked_ip
HAVING count(*) > 1
ORDER BY logins DESC, field, masked_value
