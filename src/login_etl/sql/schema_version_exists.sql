SELECT to_regclass('login_etl_schema_version') IS NOT NULL
