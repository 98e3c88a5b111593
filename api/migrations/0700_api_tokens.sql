-- API tokens (api/auth.py): opaque bearer tokens, stored only as their SHA-256, each with a
-- user name, roles and the regions whose objects it may see (NULL = every region).

CREATE TABLE ops.api_tokens (
    token_id     text        PRIMARY KEY,
    token_hash   text        NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    user_name    text        NOT NULL CHECK (user_name <> ''),
    roles        text[]      NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[
                     'operator', 'approver', 'outworker', 'billing', 'analyst', 'admin']),
    regions      text[],
    description  text        NOT NULL DEFAULT '',
    created_by   text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON ops.api_tokens (user_name);

GRANT SELECT, INSERT, UPDATE ON ops.api_tokens TO {{role.api}};
