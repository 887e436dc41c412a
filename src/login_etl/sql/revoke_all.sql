-- Before a role gets its set, it loses whatever it held on the service's
-- tables, so `grant` gives exactly one set (a writer turned analyst keeps
-- nothing of the writer). Every table the service creates is listed here.
REVOKE ALL ON user_logins, login_etl_ledger, user_logins_rejected, login_etl_pii_access,
    login_etl_lake_outbox, iceberg_tables, iceberg_namespace_properties, login_etl_schema_version
    FROM {role};
REVOKE ALL ON SEQUENCE login_etl_lake_outbox_id_seq FROM {role};
REVOKE TEMPORARY ON DATABASE {database} FROM {role};
REVOKE ALL ON FUNCTION
    login_etl_record_pii_access(text, text, text, integer, text, varchar) FROM {role};
