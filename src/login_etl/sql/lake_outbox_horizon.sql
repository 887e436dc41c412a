-- Transactions below this id have all ended: their outbox rows are final,
-- so none can appear later below a mark taken from them.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text
