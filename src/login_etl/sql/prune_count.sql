-- What prune_ledger.sql would forget.
SELECT count(*) FROM login_etl_ledger
WHERE recorded_at < now() - make_interval(secs => %(older_than)s)
