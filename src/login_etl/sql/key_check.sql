-- Does user_logins hold masks, and did one of the configured keys make any?
-- The second scan stops at the first match, so it is cheap when the keys are right.
SELECT EXISTS (SELECT 1 FROM user_logins WHERE masked_ip IS NOT NULL) AS any_masks,
       EXISTS (
           SELECT 1 FROM user_logins
           WHERE split_part(masked_ip, '.', 1) = ANY (%(ids)s)
              OR split_part(masked_device_id, '.', 1) = ANY (%(ids)s)
       ) AS ours
