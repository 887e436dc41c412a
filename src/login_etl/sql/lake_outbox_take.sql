-- The next final outbox rows above the mark, in mark order.
SELECT xid::text, id, message_id, sent_at, create_date, user_id, device_type,
       masked_ip, masked_device_id, locale, app_version, app_version_raw, extra
FROM login_etl_lake_outbox
WHERE xid < %(horizon)s::xid8
  AND (xid, id) > (%(xid)s::xid8, %(id)s::bigint)
ORDER BY xid, id
LIMIT %(limit)s
