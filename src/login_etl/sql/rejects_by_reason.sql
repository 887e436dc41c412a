SELECT reason, count(*) AS n, max(rejected_at) AS last_at
FROM user_logins_rejected
GROUP BY reason
ORDER BY n DESC, reason
