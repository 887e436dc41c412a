-- One row per migration applied (sql/migrations/NNNN_*.sql), made by init-db.
CREATE TABLE IF NOT EXISTS login_etl_schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
