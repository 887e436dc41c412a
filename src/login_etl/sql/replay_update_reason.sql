UPDATE user_logins_rejected SET reason = %(reason)s WHERE message_id = %(message_id)s
