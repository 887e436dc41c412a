-- Rows per create_date among the dates a backfill replaces.
SELECT create_date, count(*) FROM user_logins
WHERE create_date = ANY(%(dates)s::date[])
GROUP BY create_date
