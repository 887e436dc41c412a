-- Analysts read the masked table and nothing else: not the rejected
-- bodies, not the ledger, not the PII audit.
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT CONNECT ON DATABASE {database} TO {role};
GRANT SELECT ON user_logins TO {role};
