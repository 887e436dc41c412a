-- A schema, other than the service's and one named after the role itself,
-- where the role (or a role it can become) may create objects: one named
-- after another role comes first in that role's default search path
-- ("$user", public), so a table or function put there would stand in for
-- the service's in that role's sessions (a worker's among them).
SELECT n.nspname
FROM pg_roles AS r
JOIN pg_roles AS m ON pg_has_role(r.oid, m.oid, 'MEMBER')
CROSS JOIN pg_namespace AS n
WHERE r.rolname = %(role)s
  AND n.nspname NOT IN (r.rolname, %(schema)s, 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%%'
  AND has_schema_privilege(m.oid, n.oid, 'CREATE')
ORDER BY n.nspname
LIMIT 1
