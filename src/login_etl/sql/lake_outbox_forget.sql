-- Outbox rows at or below the high-water mark are in the lake already.
DELETE FROM login_etl_lake_outbox WHERE (xid, id) <= (%(xid)s::xid8, %(id)s::bigint)
