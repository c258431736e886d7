"""Every `@pytest.mark.anyio` test runs twice: on asyncio (aiosqlite) and on trio (thread-confined sqlite3)."""

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param
