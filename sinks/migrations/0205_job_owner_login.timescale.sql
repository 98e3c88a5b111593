-- unimeter: as-admin
-- TimescaleDB runs each policy (compression, retention, continuous-aggregate refresh) as a
-- background worker under the job's owner, and refuses to start one for a role without
-- LOGIN ("permission denied to start background process"). The policies belong to the owner
-- role, so it gets LOGIN here; it has no password, so nobody can sign in as it over the
-- password authentication unimeter configures.
ALTER ROLE {{role.owner}} LOGIN;
