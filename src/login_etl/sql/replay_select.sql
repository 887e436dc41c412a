-- Lock a page of rejections; concurrent replays skip what another one holds.
SELECT message_id, reason, sent_at, receive_count, sealed_body
FROM user_logins_rejected
WHERE (%(reason)s::text IS NULL OR reason = %(reason)s)
  AND message_id > %(after)s
ORDER BY message_id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
