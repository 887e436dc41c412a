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

-- The audit is written one way only: login_etl_record_pii_access, which runs
-- as the table's owner (SECURITY DEFINER), so a role that reveals PII needs
-- EXECUTE on it and no privilege on the table. The caller gives only what it
-- knows: the table's trigger (below) fills the time and the role that logged
-- in (session_user). The transaction's commit is made durable even where the
-- server, database or role default is synchronous_commit = off (set locally:
-- until the transaction ends). The search path is pinned with pg_temp last,
-- so a caller's temporary table cannot stand in for the audit table.
DO $do$
BEGIN
    EXECUTE format($create$
        CREATE OR REPLACE FUNCTION login_etl_record_pii_access(
            actor text, command text, field text, value_count integer, purpose text,
            user_id varchar
        ) RETURNS TABLE (id bigint, accessed_at timestamptz, db_role text)
        LANGUAGE sql SECURITY DEFINER SET search_path = %I, pg_temp
        AS $body$
            SELECT set_config('synchronous_commit', 'on', true);
            INSERT INTO login_etl_pii_access AS a
                (actor, command, field, value_count, purpose, user_id)
            VALUES ($1, $2, $3, $4, $5, $6)
            RETURNING a.id, a.accessed_at, a.db_role;
        $body$
    $create$, current_schema());
END
$do$;
REVOKE ALL ON FUNCTION login_etl_record_pii_access(text, text, text, integer, text, varchar)
    FROM PUBLIC;

-- Whatever privileges a role holds, only the owner (or a member of it, and the
-- recording function, which runs as the owner) may write audit rows, and an
-- inserted row gets the true time and role whoever supplies them: this holds
-- even for roles that bypass grants, such as members of pg_write_all_data.
CREATE OR REPLACE FUNCTION login_etl_pii_access_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RAISE EXCEPTION 'login_etl_pii_access is written only through login_etl_record_pii_access'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.accessed_at := now();
        NEW.db_role := session_user;
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
-- (EXECUTE PROCEDURE: the spelling servers before PostgreSQL 11 accept too.)
DO $do$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_trigger
        WHERE tgrelid = 'login_etl_pii_access'::regclass AND tgname = 'login_etl_pii_access_rows'
    ) THEN
        CREATE TRIGGER login_etl_pii_access_rows
            BEFORE INSERT OR UPDATE OR DELETE ON login_etl_pii_access
            FOR EACH ROW EXECUTE PROCEDURE login_etl_pii_access_guard();
        CREATE TRIGGER login_etl_pii_access_truncate
            BEFORE TRUNCATE ON login_etl_pii_access
            FOR EACH STATEMENT EXECUTE PROCEDURE login_etl_pii_access_guard();
    END IF;
END
$do$;

-- Databases made before the recording function may have granted writes on
-- the audit table to a recovery role: take them back from everyone but the
-- owner (reading it stays as granted).
DO $do$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
        FROM pg_class AS c
        CROSS JOIN LATERAL aclexplode(c.relacl) AS a
        LEFT JOIN pg_roles AS r ON r.oid = a.grantee
        WHERE c.oid = 'login_etl_pii_access'::regclass
          AND a.grantee <> c.relowner AND a.privilege_type <> 'SELECT'
    LOOP
        EXECUTE format(
            'REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'
            ' ON login_etl_pii_access FROM %s',
            grantee
        );
    END LOOP;
END
$do$;
