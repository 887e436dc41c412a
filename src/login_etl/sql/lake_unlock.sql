SELECT pg_advisory_unlock(hashtext('login-etl lake writer'))
