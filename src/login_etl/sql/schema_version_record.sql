INSERT INTO login_etl_schema_version (version) VALUES (%(version)s)
