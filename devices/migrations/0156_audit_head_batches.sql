-- The audit head may advance by a batch of records (devices/audit.py append_many), but only
-- onto records that are all there: every sequence number up to the new head, and the new
-- head's hash on its record.
CREATE OR REPLACE FUNCTION ops.audit_head_forward_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq <= OLD.seq
       OR NOT EXISTS (SELECT 1 FROM ops.audit_log WHERE seq = NEW.seq AND hash = NEW.hash)
       OR (SELECT count(*) FROM ops.audit_log WHERE seq > OLD.seq AND seq <= NEW.seq)
          <> NEW.seq - OLD.seq THEN
        RAISE EXCEPTION 'ops.audit_head only advances onto appended records'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
