-- Record one rejection unless its message id is already ledgered.
WITH fresh AS (
    INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
    VALUES (%(message_id)s, 'rejected', %(sent_at)s)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
)
INSERT INTO user_logins_rejected (message_id, reason, sent_at, receive_count, sealed_body)
SELECT message_id, %(reason)s, %(sent_at)s, %(receive_count)s, %(sealed_body)s FROM fresh
RETURNING message_id
