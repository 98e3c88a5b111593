"""The HTTP API on the real ledger: authentication, roles, regions, commands and the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.api.conftest import Api

pytestmark = pytest.mark.integration

DEMO = Path(__file__).parents[1] / "data" / "ledger" / "demo"


# --------------------------------------------------------------------------- authentication


def test_no_or_unknown_token_is_401(api: Api) -> None:
    assert api.client.get("/v1/devices").status_code == 401
    bad = api.client.get("/v1/devices", headers={"Authorization": "Bearer umt_nope"})
    assert bad.status_code == 401
    assert bad.json()["code"] == "unauthenticated"
    assert bad.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/health").json() == {"status": "ok"}


def test_me_and_revocation(api: Api) -> None:
    me = api.get("op_r1", "/v1/me").json()
    assert me["user"] == "op-li"
    assert me["regions"] == ["R1"]
    assert "commands:approve" not in me["permissions"]
    token_id = api.get("admin", "/v1/me").json()  # admin creates and revokes a token
    created = api.post("admin", "/v1/tokens", json={"user": "temp", "roles": ["analyst"]})
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["token_id"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/v1/me", headers=headers).status_code == 200
    assert api.client.delete(f"/v1/tokens/{token_id}",
                             headers=api.headers("admin")).status_code == 204
    assert api.client.get("/v1/me", headers=headers).status_code == 401


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize(("who", "method", "url", "body"), [
    ("analyst", "post", "/v1/commands", {"device_id": "GAS-ARM-1", "command": "read_now"}),
    ("outworker", "post", "/v1/commands", {"device_id": "GAS-ARM-1", "command": "read_now"}),
    ("op_r1", "post", "/v1/commands/x/approve", {}),
    ("op_r1", "post", "/v1/quarantine/op-x/release", {}),
    ("billing", "post", "/v1/operations", {"kind": "install", "params": {}}),
    ("outworker", "post", "/v1/operations", {"kind": "register", "params": {}}),
    ("op_r1", "get", "/v1/audit/verify", None),
    ("op_r1", "post", "/v1/tokens", {"user": "x", "roles": ["admin"]}),
    ("analyst", "get", "/v1/commands", None),
])
def test_roles_deny_what_they_do_not_grant(api: Api, who: str, method: str, url: str,
                                           body: dict[str, object] | None) -> None:
    response = getattr(api, method)(who, url, **({"json": body} if body is not None else {}))
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "forbidden"


# --------------------------------------------------------------------------- regions


def test_an_operator_sees_only_their_region(api: Api) -> None:
    r2 = api.get("op_r2", "/v1/devices").json()
    assert [d["device_id"] for d in r2["items"]] == ["GAS-R2-1"]
    assert api.get("op_r2", "/v1/devices/GAS-ARM-1").status_code == 404
    assert api.get("op_r2", "/v1/devices/GAS-R2-1").status_code == 200
    refused = api.post("op_r2", "/v1/commands", json={"device_id": "GAS-ARM-1",
                                                      "command": "read_now"})
    assert refused.status_code == 404
    r1 = api.post("op_r1", "/v1/commands", json={"device_id": "GAS-ARM-1",
                                                 "command": "read_now"}).json()
    assert api.get("op_r2", f"/v1/commands/{r1['command_id']}").status_code == 404
    assert api.get("op_r2", "/v1/commands").json()["items"] == []
    assert api.get("op_r2", "/v1/topology/meters/GAS-C1-01/path").status_code == 404
    assert api.get("op_r2", "/v1/topology/geojson").status_code == 404  # needs a root
    assert api.get("op_r1", "/v1/topology/geojson",
                   params={"root": "R1-B2"}).status_code == 200


def test_pages_and_cursors(api: Api) -> None:
    seen, cursor = [], None
    while True:
        page = api.get("admin", "/v1/devices", params={"cursor": cursor} if cursor else {})
        body = page.json()
        assert len(body["items"]) <= 5
        seen += [d["device_id"] for d in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 22  # the whole fleet, in stock included
    assert api.get("admin", "/v1/devices", params={"limit": 100000}).status_code == 422


# --------------------------------------------------------------------------- commands


def test_command_flow_with_second_approver(api: Api) -> None:
    sent = api.post("op_r1", "/v1/commands", json={
        "device_id": "GAS-DIRECT-1", "command": "valve_open", "client_command_id": "c-1",
        "reason": "customer request"})
    assert sent.status_code == 201
    body = sent.json()
    assert body["state"] == "requested"
    assert body["approvals_required"] == 1
    assert body["origin"] == "api"
    assert body["preview_hex"].endswith("55 ad 16") or body["preview_hex"]
    again = api.post("op_r1", "/v1/commands", json={
        "device_id": "GAS-DIRECT-1", "command": "valve_open", "client_command_id": "c-1",
        "reason": "customer request"})
    assert again.status_code == 200
    assert again.json()["command_id"] == body["command_id"]
    approved = api.post("approver_r1", f"/v1/commands/{body['command_id']}/approve",
                        json={"comment": "checked"})
    assert approved.json()["state"] == "approved"
    history = api.get("op_r1", f"/v1/commands/{body['command_id']}/history").json()
    assert [h["action"] for h in history] == ["command.requested", "command.approval",
                                              "command.approved"]


def test_approver_cannot_approve_own_command(api: Api) -> None:
    own = api.post("approver", "/v1/commands", json={"device_id": "GAS-DIRECT-1",
                                                     "command": "valve_open"}).json()
    refused = api.post("approver", f"/v1/commands/{own['command_id']}/approve")
    assert refused.status_code == 403
    assert refused.json()["code"] == "approval_refused"


def test_arm_instead_of_open_and_protected_customer_via_api(api: Api) -> None:
    armed = api.post("op_r1", "/v1/commands", json={"device_id": "GAS-ARM-1",
                                                    "command": "valve_open"}).json()
    assert armed["command"] == "valve_arm_open"
    assert armed["state"] == "approved"
    refused = api.post("billing", "/v1/commands", json={
        "device_id": "GAS-PROT-1", "command": "valve_close", "params": {"cause": "debt"}})
    assert refused.status_code == 403
    body = refused.json()
    assert body["code"] == "safety_policy"
    assert body["rule"] == "protected_customer"
    stored = api.get("admin", f"/v1/commands/{body['command_id']}").json()
    assert stored["state"] == "rejected"
    assert stored["origin"] == "billing"


def test_invalid_requests_are_422_with_reasons(api: Api) -> None:
    bad = api.post("op_r1", "/v1/commands", json={"device_id": "GAS-ARM-1",
                                                  "command": "top_up",
                                                  "params": {"amount": "-1", "topup_id": "t"}})
    assert bad.status_code == 422
    assert "amount" in bad.json()["reason"]
    unknown = api.post("op_r1", "/v1/commands", json={"device_id": "GAS-ARM-1",
                                                      "command": "explode"})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "invalid_request"


def test_mass_command_two_approvers_via_api(api: Api) -> None:
    created = api.post("op_r1", "/v1/command-groups", json={
        "command": "valve_close", "params": {"cause": "service"},
        "selector": {"location_id": "R1-B2"}, "reason": "riser works"})
    assert created.status_code == 201, created.text
    group = created.json()
    assert group["device_count"] == 12
    assert all(i["frame"].startswith("fe fe fe fe 68 30") for i in group["preview"])
    url = f"/v1/command-groups/{group['group_id']}/approve"
    one = api.post("approver_r1", url, json={"preview_hash": group["preview_hash"]})
    assert one.json()["state"] == "requested"
    twice = api.post("approver_r1", url, json={"preview_hash": group["preview_hash"]})
    assert twice.status_code == 403
    both = api.post("approver", url, json={"preview_hash": group["preview_hash"]})
    assert both.json()["state"] == "approved"
    assert api.get("op_r2", f"/v1/command-groups/{group['group_id']}").status_code == 404


# --------------------------------------------------------------------------- operations


def test_outworker_installs_a_meter(api: Api) -> None:
    started = api.post("outworker", "/v1/operations", json={
        "kind": "install", "params": {"meter_id": "GAS-STOCK-1", "location_id": "R1-B2-U1",
                                      "account_id": "ACC-NEW-1", "opening_balance": "20.00"}})
    assert started.status_code == 201, started.text
    op = started.json()
    assert op["state"] == "running"
    assert op["steps"][0]["state"] == "done"
    assert api.get("op_r2", f"/v1/operations/{op['operation_id']}").status_code == 404


# --------------------------------------------------------------------------- readings


def test_raw_readings_are_paged_and_range_limited(api: Api) -> None:
    t0 = datetime(2024, 6, 1, tzinfo=UTC)
    with api.fleet.db.admin() as conn:
        for h in range(12):
            conn.execute("INSERT INTO data.raw_readings (meter_id, register, ts, value, unit, "
                         "received_at) VALUES ('GAS-ARM-1', 'volume', %s, %s, 'm3', %s)",
                         (t0 + timedelta(hours=h), 100 + h * 0.5, t0 + timedelta(hours=h)))
    url = "/v1/meters/GAS-ARM-1/readings/raw"
    window = {"from": t0.isoformat(), "to": (t0 + timedelta(days=1)).isoformat()}
    first = api.get("analyst", url, params=window).json()
    assert [r["value"] for r in first["items"]] == ["100", "100.5", "101", "101.5", "102"]
    rest = api.get("analyst", url, params={**window, "cursor": first["next_cursor"]}).json()
    assert rest["items"][0]["value"] == "102.5"
    too_long = api.get("analyst", url, params={"from": t0.isoformat(),
                                               "to": (t0 + timedelta(days=90)).isoformat()})
    assert too_long.status_code == 422
    assert "31 days" in too_long.json()["reason"]
    naive = api.get("analyst", url, params={"from": "2024-06-01T00:00:00",
                                            "to": "2024-06-02T00:00:00"})
    assert naive.status_code == 422
    assert api.get("op_r2", url, params=window).status_code == 404


# --------------------------------------------------------------------------- admin


def test_import_dry_run_and_rejection(api: Api) -> None:
    csv = (DEMO / "manufacturers.csv").read_bytes()
    headers = {**api.headers("admin"), "Content-Type": "text/csv"}
    dry = api.client.post("/v1/imports", params={"kind": "manufacturers", "dry_run": True,
                                                 "filename": "manufacturers.csv"},
                          content=csv, headers=headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True
    bad = api.client.post("/v1/imports", params={"kind": "manufacturers"},
                          content=b"manufacturer_id,name\n,nameless\n", headers=headers)
    assert bad.status_code == 422
    assert bad.json()["problems"]
    wrong_type = api.client.post("/v1/imports", content=b"x",
                                 headers={**api.headers("admin"),
                                          "Content-Type": "application/pdf"})
    assert wrong_type.status_code == 415


def test_audit_verify_and_records(api: Api) -> None:
    api.post("op_r1", "/v1/commands", json={"device_id": "GAS-ARM-1", "command": "read_now"})
    verdict = api.get("admin", "/v1/audit/verify").json()
    assert verdict["ok"] is True
    assert verdict["checked"] >= 2
    records = api.get("admin", "/v1/audit", params={"object_type": "command"}).json()
    assert records[0]["action"] == "command.requested"


def test_openapi_documents_security_and_errors(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    post = doc["paths"]["/v1/commands"]["post"]
    assert {"201", "200", "403", "404", "409", "422"} <= set(post["responses"])
    assert "valve_close" in str(doc["components"]["schemas"]["CommandIn"])


def test_bulk_commands_become_a_mass_command_past_the_threshold(api: Api) -> None:
    few = api.post("op_r1", "/v1/commands/bulk", json={
        "device_ids": ["GAS-ARM-1", "GAS-ARM-2", "WATER-1", "GAS-R2-1"],
        "command": "valve_close", "params": {"cause": "manual"}})
    assert few.status_code == 201, few.text
    body = few.json()
    assert body["group"] is None
    assert sorted(c["device_id"] for c in body["commands"]) == ["GAS-ARM-1", "GAS-ARM-2"]
    assert set(body["refused"]) == {"WATER-1", "GAS-R2-1"}  # unsupported; other region
    many = api.post("op_r1", "/v1/commands/bulk", json={
        "device_ids": [f"GAS-C1-{i:02d}" for i in range(1, 13)],
        "command": "valve_close", "params": {"cause": "service"}}).json()
    assert many["commands"] == []
    assert many["group"]["device_count"] == 12
    assert many["group"]["approvals_required"] == 2
