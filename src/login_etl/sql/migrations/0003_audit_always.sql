-- The audit's trigger fires whatever the session's replication role: a role
-- allowed to SET session_replication_role = replica (a superuser's grant, on
-- PostgreSQL 15 GRANT SET ON PARAMETER) would otherwise skip it, and a row
-- written through the recording function would take the column defaults, the
-- owner as db_role. And the time is the insert's own (clock_timestamp), not the
-- start of the caller's transaction (now): a caller that opens a transaction
-- and calls the recording function hours later no longer backdates its row.
CREATE OR REPLACE FUNCTION login_etl_pii_access_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE')
    THEN
        RAISE EXCEPTION 'login_etl_pii_access is written only through login_etl_record_pii_access'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.accessed_at := clock_timestamp();
        NEW.db_role := session_user;
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
ALTER TABLE login_etl_pii_access ENABLE ALWAYS TRIGGER login_etl_pii_access_rows;
ALTER TABLE login_etl_pii_access ENABLE ALWAYS TRIGGER login_etl_pii_access_truncate;
