-- The append-only, hash-chained audit log of the control plane (devices/audit.py).
-- Rows are never updated or deleted: a trigger refuses it for every role, and the control
-- plane role may only INSERT and SELECT. The single head row hands out gap-free sequence
-- numbers under a row lock and remembers the newest hash, so a removed tail is detectable.

CREATE TABLE ops.audit_log (
    seq         bigint      PRIMARY KEY CHECK (seq > 0),
    ts          timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    object_type text        NOT NULL,
    object_id   text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   text        NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash        text        NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);
CREATE INDEX audit_log_object ON ops.audit_log (object_type, object_id, seq);
CREATE INDEX audit_log_actor_ts ON ops.audit_log (actor, ts);

CREATE TABLE ops.audit_head (
    id   int    PRIMARY KEY CHECK (id = 1),
    seq  bigint NOT NULL,
    hash text   NOT NULL
);
INSERT INTO ops.audit_head (id, seq, hash) VALUES (1, 0, repeat('0', 64));

CREATE FUNCTION ops.audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ops.audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit records are never changed; append a correcting record instead';
END $$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON ops.audit_log
    FOR EACH ROW EXECUTE FUNCTION ops.audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON ops.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ops.audit_log_refuse_change();

-- The head only moves forward, one record at a time.
CREATE FUNCTION ops.audit_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq <> OLD.seq + 1 THEN
        RAISE EXCEPTION 'ops.audit_head only advances by one record'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_head_forward BEFORE UPDATE OR DELETE ON ops.audit_head
    FOR EACH ROW EXECUTE FUNCTION ops.audit_head_forward_only();

GRANT SELECT, INSERT ON ops.audit_log TO {{role.api}};
GRANT SELECT, UPDATE ON ops.audit_head TO {{role.api}};
