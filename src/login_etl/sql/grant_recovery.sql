-- A person recovering PII (`unmask`, `rejects list --show-bodies`): read the
-- masks and the sealed bodies, and record each access through the audit
-- function. No privilege on the audit table itself: it can neither write,
-- change nor read audit rows.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT SELECT ON user_logins, user_logins_rejected TO {role};
GRANT EXECUTE ON FUNCTION
    login_etl_record_pii_access(text, text, text, integer, text, varchar) TO {role};
