-- Forget message ids that SQS can no longer redeliver: recorded longer ago than
-- the queue's retention period plus a margin. An id is recorded after it was
-- sent, so it was also sent before then (the margin covers clock skew), and
-- the recorded_at index finds these rows without reading the whole ledger.
DELETE FROM login_etl_ledger
WHERE recorded_at < now() - make_interval(secs => %(older_than)s)
