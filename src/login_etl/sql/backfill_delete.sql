DELETE FROM user_logins WHERE create_date = ANY(%(dates)s::date[])
