-- The next final outbox rows above the mark, in mark order.
-- Column lists in braces come from login_etl.record (sqlfiles.statement).
SELECT xid::text, id, {lake}
FROM login_etl_lake_outbox
WHERE xid < %(horizon)s::xid8
  AND (xid, id) > (%(xid)s::xid8, %(id)s::bigint)
ORDER BY xid, id
LIMIT %(limit)s
