-- A page of rows whose masks were not made by the primary key, in ctid order.
SELECT ctid::text, masked_ip, masked_device_id
FROM user_logins
WHERE ctid > %(after)s::tid
  AND (masked_ip NOT LIKE %(prefix)s OR masked_device_id NOT LIKE %(prefix)s)
ORDER BY ctid
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
