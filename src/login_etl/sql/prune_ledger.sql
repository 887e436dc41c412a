-- Forget message ids that SQS can no longer redeliver: sent longer ago than
-- the queue's retention period (plus a margin for clock skew).
DELETE FROM login_etl_ledger
WHERE sent_at < now() - make_interval(secs => %(older_than)s)
