SELECT reason, count(*) AS messages
FROM user_logins_rejected
GROUP BY reason
ORDER BY messages DESC, reason
