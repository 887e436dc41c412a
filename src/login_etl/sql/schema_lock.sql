SELECT pg_advisory_xact_lock(hashtext('login-etl schema'))
