SELECT message_id, reason, sent_at, rejected_at, receive_count, sealed_body
FROM user_logins_rejected
WHERE %(reason)s::text IS NULL OR reason = %(reason)s
ORDER BY rejected_at DESC, message_id
LIMIT %(limit)s
