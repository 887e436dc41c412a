DELETE FROM user_logins_rejected WHERE message_id = %(message_id)s
