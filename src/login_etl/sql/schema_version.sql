SELECT coalesce(max(version), 0) FROM login_etl_schema_version
