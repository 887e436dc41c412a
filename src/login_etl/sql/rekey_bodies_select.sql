SELECT message_id, sealed_body
FROM user_logins_rejected
WHERE message_id > %(after)s AND sealed_body NOT LIKE %(prefix)s
ORDER BY message_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
