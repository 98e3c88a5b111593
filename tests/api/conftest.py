"""An API app on the test fleet, and tokens for every role (some limited to a region)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import create_token
from api.settings import ApiSettings
from devices.commands.settings import CommandSettings
from tests.plugins.fleet import Fleet

#: name -> (user, roles, regions)
PEOPLE: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    "admin": ("admin-1", ("admin",), None),
    "op_r1": ("op-li", ("operator",), ("R1",)),
    "op_r2": ("op-wang", ("operator",), ("R2",)),
    "approver_r1": ("ap-zhao", ("approver",), ("R1",)),
    "approver": ("ap-chen", ("approver",), None),
    "billing": ("billing-sync", ("billing",), None),
    "analyst": ("an-sun", ("analyst",), None),
    "outworker": ("ow-zhou", ("outworker",), ("R1",)),
}


@dataclass
class Api:
    client: TestClient
    tokens: dict[str, str]
    fleet: Fleet

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, who: str, url: str, **kw):  # type: ignore[no-untyped-def]
        return self.client.get(url, headers=self.headers(who), **kw)

    def post(self, who: str, url: str, **kw):  # type: ignore[no-untyped-def]
        return self.client.post(url, headers=self.headers(who), **kw)


def make_tokens(fleet: Fleet) -> dict[str, str]:
    tokens = {}
    with fleet.connect() as conn:
        for name, (user, roles, regions) in PEOPLE.items():
            _, tokens[name] = create_token(conn, user=user, roles=roles,
                                           regions=list(regions) if regions else None)
    return tokens


@pytest.fixture
def api(fleet: Fleet) -> Iterator[Api]:
    app = create_app(fleet.db.settings, settings=ApiSettings(token_cache_s=0, page_size=5),
                     command_settings=CommandSettings(anomaly_max_commands=1000))
    with TestClient(app) as client:
        yield Api(client, make_tokens(fleet), fleet)
