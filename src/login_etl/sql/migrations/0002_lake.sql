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
