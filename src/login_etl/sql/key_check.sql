-- Is anything stored under a key (user_logins masks, sealed rejected bodies,
-- the lake outbox's masks), and did one of the configured keys make any of it?
-- Each scan in `ours` stops at its first match, so it is cheap when the keys are right.
SELECT EXISTS (SELECT 1 FROM user_logins WHERE masked_ip IS NOT NULL)
       OR EXISTS (SELECT 1 FROM user_logins_rejected)
       OR EXISTS (SELECT 1 FROM login_etl_lake_outbox) AS any_keyed,
       EXISTS (
           SELECT 1 FROM user_logins
           WHERE split_part(masked_ip, '.', 1) = ANY (%(ids)s)
              OR split_part(masked_device_id, '.', 1) = ANY (%(ids)s)
       )
       OR EXISTS (
           SELECT 1 FROM user_logins_rejected
           WHERE split_part(sealed_body, '.', 1) = ANY (%(ids)s)
       )
       OR EXISTS (
           SELECT 1 FROM login_etl_lake_outbox
           WHERE split_part(masked_ip, '.', 1) = ANY (%(ids)s)
       ) AS ours
