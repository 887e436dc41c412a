-- One lake writer at a time across all workers (session lock: a dropped
-- connection releases it; Iceberg's own commit check covers that moment).
SELECT pg_try_advisory_lock(hashtext('login-etl lake writer'))
