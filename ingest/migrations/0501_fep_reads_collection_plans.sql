-- The FEPs run the collection plans of the ledger: they read the plans resolved to devices
-- (ledger.collection_plan_devices, owned by devices/) for the service points they serve.
-- Read-only, and nothing personal: the view carries plan, device, address, link and
-- service point only.
GRANT USAGE ON SCHEMA ledger TO {{role.ingest}};
GRANT SELECT ON ledger.collection_plan_devices TO {{role.ingest}};
