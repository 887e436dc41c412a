-- (PostgreSQL 15 and later.) A privilege on a superuser's setting that the
-- role holds, directly, through PUBLIC or through a role it is a member of:
-- GRANT SET ON PARAMETER or GRANT ALTER SYSTEM ON PARAMETER.
SELECT a.privilege_type, p.parname
FROM pg_parameter_acl AS p
CROSS JOIN LATERAL aclexplode(p.paracl) AS a
JOIN pg_roles AS r ON r.rolname = %(role)s
WHERE a.grantee = 0 OR pg_has_role(r.oid, a.grantee, 'MEMBER')
ORDER BY a.privilege_type, p.parname
LIMIT 1
