-- The role itself and every role whose privileges it has or can take with SET
-- ROLE (memberships direct or through other roles), with the attributes that
-- read past privileges or raise them. The role itself comes first.
SELECT m.rolname, m.rolsuper, m.rolcreaterole, m.rolbypassrls, m.rolreplication
FROM pg_roles AS r
JOIN pg_roles AS m ON pg_has_role(r.oid, m.oid, 'MEMBER')
WHERE r.rolname = %(role)s
ORDER BY m.oid <> r.oid, m.rolname
