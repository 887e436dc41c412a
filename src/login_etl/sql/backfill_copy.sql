-- Column lists in braces come from login_etl.record (sqlfiles.statement).
COPY user_logins ({user_logins}) FROM STDIN (FORMAT BINARY)
