UPDATE user_logins_rejected SET sealed_body = %(sealed_body)s WHERE message_id = %(message_id)s
