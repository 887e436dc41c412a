-- The key ids of a sample of what is stored under a key (for an error message).
SELECT DISTINCT key_id FROM (
    (SELECT split_part(masked_ip, '.', 1) AS key_id
     FROM user_logins WHERE masked_ip IS NOT NULL LIMIT 10000)
    UNION ALL
    (SELECT split_part(sealed_body, '.', 1) FROM user_logins_rejected LIMIT 10000)
    UNION ALL
    (SELECT split_part(masked_ip, '.', 1) FROM login_etl_lake_outbox LIMIT 10000)
) AS sample
ORDER BY key_id
LIMIT 5
