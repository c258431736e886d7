"""The fault tests drive the real daemon like the end-to-end tests, with the same fixture."""

from tests.e2e.conftest import daemons  # noqa: F401  (the fixture)
