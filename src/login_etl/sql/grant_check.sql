-- Whether the role exists, whether privileges would mean anything to it
-- (a superuser bypasses them all; the tables' owner, or a member of it,
-- holds them all), and where the grants go.
SELECT r.rolsuper,
       pg_has_role(r.oid, c.relowner, 'MEMBER') AS owns_tables,
       current_database(),
       current_schema()
FROM pg_roles AS r, pg_class AS c
WHERE r.rolname = %(role)s AND c.oid = 'user_logins'::regclass
