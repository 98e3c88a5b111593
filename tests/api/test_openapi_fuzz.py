"""schemathesis against the OpenAPI document: every operation, generated requests, real DB.

Each operation of the document gets requests generated from its schema (schemathesis'
strategies, driven by Hypothesis), sent to the app with an admin token, and checked: no
server error, status codes, content types and response bodies as documented. Bounded for
the default run (``EXAMPLES`` per operation); the ``slow`` variant runs many more. The alert
stream is left out (it never ends by design; ``test_alerts.py`` covers it).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import ApiSettings
from tests.api.conftest import make_tokens
from tests.plugins.fleet import Fleet

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _fuzz(fleet: Fleet, examples: int) -> list[str]:
    app = create_app(fleet.db.settings, settings=ApiSettings(token_cache_s=60))
    headers = {"Authorization": f"Bearer {make_tokens(fleet)['admin']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    tested = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path == "/v1/alerts/stream":
                continue

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(headers=headers, checks=CHECKS)

            check()
            tested.append(f"{operation.method.upper()} {operation.path}")
    finally:
        app.state.pool.close()
    return tested


def test_api_conforms_to_its_openapi(fleet: Fleet) -> None:
    tested = _fuzz(fleet, examples=4)
    assert "POST /v1/commands" in tested
    assert len(tested) >= 30


@pytest.mark.slow
def test_api_conforms_to_its_openapi_thoroughly(fleet: Fleet) -> None:
    _fuzz(fleet, examples=100)
