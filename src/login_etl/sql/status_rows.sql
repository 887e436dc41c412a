SELECT count(*) FROM user_logins
