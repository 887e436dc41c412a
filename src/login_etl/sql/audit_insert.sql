-- One act of revealing PII; the values revealed are never stored here.
INSERT INTO login_etl_pii_access (actor, command, field, value_count, purpose, user_id)
VALUES (%(actor)s, %(command)s, %(field)s, %(value_count)s, %(purpose)s, %(user_id)s)
RETURNING id, accessed_at, db_role
