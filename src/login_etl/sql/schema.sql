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
