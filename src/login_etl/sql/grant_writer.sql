-- What a worker (`login-etl run --no-init-db`) needs, and nothing more:
-- read and append user_logins (never change or delete a loaded row), the
-- DML of the service's own bookkeeping tables (ledger: load, prune, replay;
-- rejections: record, replay), and its per-connection temporary staging
-- table. No CREATE anywhere, so no DDL; no access to the PII audit.
-- A table a later feature adds gets its line here and in revoke_all.sql.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {role};
GRANT SELECT, INSERT ON user_logins TO {role};
-- The schema's version, checked before the first write (login_etl.schema).
GRANT SELECT ON login_etl_schema_version TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON login_etl_ledger, user_logins_rejected TO {role};
-- The lake stage: the outbox written with each batch and drained by the lake
-- writer, and the Iceberg SQL catalog its commits update.
GRANT SELECT, INSERT, DELETE ON login_etl_lake_outbox TO {role};
GRANT USAGE ON SEQUENCE login_etl_lake_outbox_id_seq TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON iceberg_tables, iceberg_namespace_properties TO {role};
