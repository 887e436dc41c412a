-- The key ids of a sample of stored masks (for an error message).
SELECT DISTINCT split_part(masked_ip, '.', 1) AS key_id
FROM (SELECT masked_ip FROM user_logins WHERE masked_ip IS NOT NULL LIMIT 10000) AS sample
ORDER BY key_id
LIMIT 5
