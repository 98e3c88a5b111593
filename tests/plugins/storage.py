"""Fixtures of the storage tests: the same test on plain PostgreSQL and on TimescaleDB."""

from __future__ import annotations

import pytest

from tests.plugins.services import DbHandle


@pytest.fixture(params=["postgres", "timescale"])
def backend_database(request: pytest.FixtureRequest) -> DbHandle:
    """A fresh migrated database of each backend in turn; the TimescaleDB run is skipped
    (with the reason) where the server has no TimescaleDB."""
    name = "database" if request.param == "postgres" else "timescale_database"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
