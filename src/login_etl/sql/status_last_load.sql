-- When the last batch committed (a loaded row or a rejection).
SELECT max(recorded_at) FROM login_etl_ledger
