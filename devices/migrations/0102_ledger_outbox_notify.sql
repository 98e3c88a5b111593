-- The outbox wakes its publisher: every insert into it NOTIFYs ledger_outbox (PostgreSQL
-- folds identical notifications of one transaction into one, delivered at commit).
CREATE FUNCTION ledger.outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER notify AFTER INSERT ON ledger.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.outbox_notify();

-- The publisher locks the rows it is publishing (SELECT ... FOR UPDATE needs UPDATE).
GRANT UPDATE ON ledger.outbox TO {{role.api}};

-- Every file import, applied or rejected: who, which files (name + sha256), what it did.
CREATE TABLE ledger.import_runs (
    import_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    files       jsonb NOT NULL,
    status      text NOT NULL CHECK (status IN ('applied', 'unchanged', 'rejected', 'dry_run')),
    counts      jsonb NOT NULL DEFAULT '{}',
    problems    jsonb NOT NULL DEFAULT '[]'
);
GRANT SELECT, INSERT ON ledger.import_runs TO {{role.api}};
GRANT SELECT ON ledger.import_runs TO {{role.billing}};
