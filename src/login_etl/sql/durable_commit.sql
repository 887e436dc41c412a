-- This transaction's commit must be on disk before its messages are deleted
-- from SQS, even on a server whose default is synchronous_commit = off.
SET LOCAL synchronous_commit = on
