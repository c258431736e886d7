from __future__ import annotations

import pytest

from tests.e2e.harness import Daemon


@pytest.fixture
def daemons():
    """Start daemons with `daemons(project, backend=...)`; every one is stopped at the end."""
    started: list[Daemon] = []

    def start(project, backend: str = "asyncio", env: dict | None = None, start: bool = True) -> Daemon:
        d = Daemon(project, backend=backend, env=env or {})
        if start:
            d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        try:
            d.stop()
        except Exception:
            if d.proc is not None:
                d.proc.kill()
