"""Test configuration: fixtures live in plugin modules (as psycopg's suite does)."""

pytest_plugins = [
    "tests.plugins.services",
    "tests.plugins.samples",
    "tests.plugins.fleet",
    "tests.plugins.storage",
]
