-- Column lists in braces come from login_etl.record (sqlfiles.statement).
INSERT INTO user_logins ({user_logins}) VALUES ({user_logins_params})
