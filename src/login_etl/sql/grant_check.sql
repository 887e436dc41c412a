-- Whether the role exists, whether privileges would mean anything to it (the
-- owner of any of the service's tables, or a member of it, holds them all; the
-- owner of their schema can drop and replace them; the database's owner can
-- change every session's settings), and where the grants go.
SELECT bool_or(pg_has_role(r.oid, c.relowner, 'MEMBER')) AS owns_tables,
       pg_has_role(r.oid, n.nspowner, 'MEMBER') AS owns_schema,
       pg_has_role(r.oid, d.datdba, 'MEMBER') AS owns_database,
       current_database(),
       n.nspname
FROM pg_roles AS r
CROSS JOIN pg_class AS c
JOIN pg_namespace AS n ON n.oid = (SELECT relnamespace FROM pg_class WHERE oid = 'user_logins'::regclass)
JOIN pg_database AS d ON d.datname = current_database()
WHERE r.rolname = %(role)s
  AND c.oid = ANY (ARRAY[
        'user_logins', 'login_etl_ledger', 'user_logins_rejected', 'login_etl_pii_access',
        'login_etl_lake_outbox', 'iceberg_tables', 'iceberg_namespace_properties'
      ]::regclass[])
GROUP BY r.oid, n.nspowner, n.nspname, d.datdba
