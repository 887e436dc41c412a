-- One act of revealing PII; the values revealed are never stored here. The
-- function fills the time and the role and makes the commit durable (migrations/0001_schema.sql).
SELECT id, accessed_at, db_role
FROM login_etl_record_pii_access(
    %(actor)s, %(command)s, %(field)s, %(value_count)s, %(purpose)s, %(user_id)s
)
