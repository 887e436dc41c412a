-- The ledger entry may have been pruned meanwhile: upsert it.
INSERT INTO login_etl_ledger (message_id, outcome, sent_at)
VALUES (%(message_id)s, 'loaded', %(sent_at)s)
ON CONFLICT (message_id) DO UPDATE SET outcome = 'loaded', recorded_at = now()
