-- Per-connection staging table for binary COPY; emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS login_etl_staging (
    message_id        text,
    user_id           varchar(128),
    device_type       varchar(32),
    masked_ip         varchar(256),
    masked_device_id  varchar(256),
    locale            varchar(32),
    app_version       integer,
    create_date       date,
    sent_at           timestamptz,
    -- lake records only (COPY fills them when the lake is on)
    app_version_raw   text,
    extra             text
) ON COMMIT DELETE ROWS
