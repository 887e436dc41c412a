-- Which of our tables exist yet (status reports zeros for missing ones).
SELECT to_regclass('user_logins') IS NOT NULL AS user_logins,
       to_regclass('user_logins_rejected') IS NOT NULL AS user_logins_rejected,
       to_regclass('login_etl_ledger') IS NOT NULL AS login_etl_ledger
