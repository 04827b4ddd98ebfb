from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wasmdeck.engine import Engine

# Times shown by the CLI and the console are local times: pin the zone so output is the same everywhere.
os.environ["TZ"] = "UTC"
time.tzset()

FIXED_CLOCK_MS = 1_795_766_400_000  # 2026-11-27 00:00:00 UTC

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "wcgi"


def fixture_module(name: str) -> Path:
    return FIXTURES / f"{name}.wasm"


@pytest.fixture(scope="session")
def wasmer_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compile cache for the session, so each fixture compiles once."""
    return tmp_path_factory.mktemp("wasmer-cache")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "wasmdeck.db"


@pytest.fixture
async def engine(db_path: Path, wasmer_cache: Path):
    instance = Engine(db_path, cache_dir=wasmer_cache)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def deploy(engine: Engine):
    """deploy("hello") deploys fixtures/wcgi/hello.wasm as worker "hello"."""

    def _deploy(fixture: str, name: str | None = None, **options):
        return engine.deploy(name or fixture, fixture_module(fixture), **options)

    return _deploy


PROTOCOL_FIXTURES = ROOT / "fixtures" / "protocol"


def protocol_module(name: str) -> Path:
    return PROTOCOL_FIXTURES / f"{name}.wasm"


@pytest.fixture
def origin():
    """A real HTTP origin on 127.0.0.1 (see tests/origin.py)."""
    from tests.origin import start_origin

    found, server = start_origin()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()
