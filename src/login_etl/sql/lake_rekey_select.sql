-- A page of outbox rows whose masks were not made by the primary key.
SELECT id, masked_ip, masked_device_id
FROM login_etl_lake_outbox
WHERE id > %(after)s::bigint
  AND (masked_ip NOT LIKE %(prefix)s OR masked_device_id NOT LIKE %(prefix)s)
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
