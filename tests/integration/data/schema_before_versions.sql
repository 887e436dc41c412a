-- The schema as init-db made it before versioned migrations: sql/schema.sql
-- then sql/lake_schema.sql at commit 061bfdb, kept to test upgrades from it.
-- login-etl schema. Idempotent; run under an advisory lock so many workers
-- starting together do not race on CREATE TABLE.

-- The analysts' table: exactly the brief's DDL. Never altered.
CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);

-- Idempotency ledger: one entry per SQS MessageId that reached a final
-- outcome, written in the same transaction as its row or rejection.
CREATE TABLE IF NOT EXISTS login_etl_ledger (
    message_id   text        PRIMARY KEY,
    outcome      text        NOT NULL CHECK (outcome IN ('loaded', 'rejected')),
    sent_at      timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_etl_ledger_recorded_at ON login_etl_ledger (recorded_at);

-- Messages that can never load as they are. The body is sealed with the
-- masking key (never plaintext) so key holders can inspect and replay it.
CREATE TABLE IF NOT EXISTS user_logins_rejected (
    message_id     text        PRIMARY KEY,
    reason         text        NOT NULL,
    sent_at        timestamptz NOT NULL,
    receive_count  integer     NOT NULL DEFAULT 1,
    sealed_body    text        NOT NULL,
    rejected_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS user_logins_rejected_reason ON user_logins_rejected (reason);

-- Who revealed PII, when, how much and why: one row committed before
-- `unmask` or `rejects list --show-bodies` shows anything. Never the values.
CREATE TABLE IF NOT EXISTS login_etl_pii_access (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    accessed_at  timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,
    db_role      text        NOT NULL DEFAULT current_user,
    command      text        NOT NULL,
    field        text        NOT NULL,
    value_count  integer     NOT NULL CHECK (value_count >= 0),
    purpose      text        NOT NULL CHECK (purpose <> ''),
    user_id      varchar(128)
);
CREATE INDEX IF NOT EXISTS login_etl_pii_access_at ON login_etl_pii_access (accessed_at);

-- The lake stage's tables: created by init-db whether or not the lake is on,
-- so a worker with the lake on needs no DDL privilege.

-- Transactional outbox: the batch transaction that loads a row into
-- user_logins writes its lake record here too. The lake writer appends these
-- to Iceberg and then deletes them. `xid` (the loading transaction) orders
-- them so that every row below the oldest running transaction is final:
-- a high-water mark over (xid, id) never skips a row committed later.
CREATE TABLE IF NOT EXISTS login_etl_lake_outbox (
    xid               xid8         NOT NULL DEFAULT pg_current_xact_id(),
    id                bigserial    NOT NULL,
    message_id        text         NOT NULL,
    sent_at           timestamptz  NOT NULL,
    create_date       date         NOT NULL,
    user_id           text         NOT NULL,
    device_type       text         NOT NULL,
    masked_ip         text         NOT NULL,
    masked_device_id  text         NOT NULL,
    locale            text,
    app_version       integer      NOT NULL,
    app_version_raw   text         NOT NULL,
    extra             text         NOT NULL,
    loaded_at         timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (xid, id)
);

-- pyiceberg's SQL catalog (the same layout as Iceberg's JDBC catalog, which
-- Spark and Trino use), for catalog name 'login_etl'.
CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name                varchar(255)  NOT NULL,
    table_namespace             varchar(255)  NOT NULL,
    table_name                  varchar(255)  NOT NULL,
    metadata_location           varchar(1000),
    previous_metadata_location  varchar(1000),
    iceberg_type                varchar(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name    varchar(255)   NOT NULL,
    namespace       varchar(255)   NOT NULL,
    property_key    varchar(255)   NOT NULL,
    property_value  varchar(1000)  NOT NULL,
    PRIMARY KEY (catalog_name, namespace, property_key)
);
