SELECT count(*) FROM login_etl_ledger
WHERE sent_at < now() - make_interval(secs => %(older_than)s)
