-- One lake record into the outbox (a replayed rejection that loads now).
-- Column lists in braces come from login_etl.record (sqlfiles.statement).
INSERT INTO login_etl_lake_outbox ({lake}) VALUES ({lake_params})
