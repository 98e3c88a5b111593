-- The session registry shared by every FEP instance, and the wake-queue of commands.
--
-- Each FEP (ingest role) records which devices it holds: its links (a DTU, a concentrator, a
-- directly connected meter) and the meters heard through them, with online state and "last
-- heard". The control plane (api role) reads it to route a CommandDispatch to the FEP holding
-- the device (CommandDispatch.fep) and to show network health. Commands for devices nobody
-- holds wait in ops.fep_pending_commands until the device next connects to any FEP, which
-- claims them atomically (UPDATE ... WHERE state = 'pending'), so exactly one FEP delivers.

CREATE TABLE ops.fep_instances (
    fep            text        PRIMARY KEY,
    service_points text[]      NOT NULL DEFAULT '{}',
    advertise      text        NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    stats          jsonb       NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE ops.fep_instances IS
    'Running FEP processes and their heartbeat; an FEP silent past its TTL is presumed dead.';

CREATE TABLE ops.device_sessions (
    device_id       text        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('link', 'meter')),
    link_id         text,
    address         text,
    protocol        text        NOT NULL DEFAULT '',
    service_point   text        NOT NULL,
    fep             text        NOT NULL,
    peer            text        NOT NULL DEFAULT '',
    online          boolean     NOT NULL,
    connected_at    timestamptz,
    last_heard      timestamptz NOT NULL,
    disconnected_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX device_sessions_link ON ops.device_sessions (link_id);
CREATE INDEX device_sessions_fep_online ON ops.device_sessions (fep) WHERE online;
COMMENT ON TABLE ops.device_sessions IS
    'Where each link and meter is held: FEP, service point, peer, online, last heard. Links '
    'are DTUs / concentrators / direct meters (kind=link); meters heard through a link have '
    'kind=meter and its link_id.';

CREATE TABLE ops.fep_pending_commands (
    command_id   text        PRIMARY KEY,
    device_id    text        NOT NULL,
    dispatch     bytea       NOT NULL,
    state        text        NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'claimed', 'done', 'expired')),
    queued_at    timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    claimed_by   text,
    claimed_at   timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    finished_at  timestamptz,
    outcome      text
);
CREATE INDEX fep_pending_commands_device ON ops.fep_pending_commands (device_id)
    WHERE state = 'pending';
CREATE INDEX fep_pending_commands_open ON ops.fep_pending_commands (expires_at)
    WHERE state IN ('pending', 'claimed');
COMMENT ON TABLE ops.fep_pending_commands IS
    'Commands waiting for their device (offline DTU, sleeping NB-IoT meter). dispatch holds the '
    'CommandDispatch envelope as received; one FEP claims and delivers each, or it expires.';

CREATE TABLE ops.fep_auto_registrations (
    service_point text        NOT NULL,
    link_id       text        NOT NULL,
    address       text        NOT NULL,
    protocol      text        NOT NULL,
    meter_id      text        NOT NULL,
    fep           text        NOT NULL,
    peer          text        NOT NULL DEFAULT '',
    first_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service_point, link_id, address)
);
COMMENT ON TABLE ops.fep_auto_registrations IS
    'Audit of devices admitted without a ledger entry (service point in auto-registration '
    'mode, for commissioning): the ledger should adopt or remove each.';

CREATE TABLE ops.file_imports (
    import_id    text        PRIMARY KEY,
    sha256       text        NOT NULL UNIQUE,
    file_name    text        NOT NULL,
    format       text        NOT NULL,
    source       text        NOT NULL,
    imported_by  text        NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    readings     integer     NOT NULL,
    lines        integer     NOT NULL
);
COMMENT ON TABLE ops.file_imports IS
    'Handheld and offline-DTU upload files imported into readings.raw (one row per file).';

GRANT SELECT, INSERT, UPDATE ON ops.fep_instances, ops.device_sessions,
    ops.fep_pending_commands TO {{role.ingest}};
GRANT SELECT, INSERT ON ops.fep_auto_registrations, ops.file_imports TO {{role.ingest}};
GRANT SELECT ON ops.fep_instances, ops.device_sessions, ops.fep_pending_commands,
    ops.fep_auto_registrations, ops.file_imports TO {{role.api}};
GRANT UPDATE (state, finished_at, outcome) ON ops.fep_pending_commands TO {{role.api}};
