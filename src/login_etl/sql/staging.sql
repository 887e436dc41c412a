-- Per-connection staging table for binary COPY; emptied at every commit.
-- Its columns are the record's (login_etl.record): the lake's own stay
-- empty while the lake is off.
CREATE TEMP TABLE IF NOT EXISTS login_etl_staging ({columns_defs}) ON COMMIT DELETE ROWS
