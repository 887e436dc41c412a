-- Rows waiting for the lake, and the age of the oldest in seconds.
SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(loaded_at)), 0)::float8
FROM login_etl_lake_outbox
