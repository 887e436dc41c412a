-- Dates of outbox rows not yet in the lake (above its mark).
SELECT DISTINCT create_date FROM login_etl_lake_outbox
WHERE (xid, id) > (%(xid)s::xid8, %(id)s::bigint)
