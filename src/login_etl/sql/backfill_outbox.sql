-- Loaded rows whose lake records still wait in the outbox (above the mark).
-- Column lists in braces come from login_etl.record (sqlfiles.statement).
INSERT INTO user_logins ({user_logins})
SELECT {user_logins}
FROM login_etl_lake_outbox
WHERE create_date = ANY(%(dates)s::date[])
  AND (xid, id) > (%(xid)s::xid8, %(id)s::bigint)
