"""Test fixtures. Integration tests run against the real stack: `crossrec up` is started once per
session in a temporary CROSSREC_HOME (the Tansu broker from its wheel, the Redis at REDIS_URL or an
embedded Valkey, every service), exactly as a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from es_server import es, es_settings, es_url, noida  # noqa: F401 - fixtures for every test

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.stack.background import BackgroundStack
from crossrec.stack.processes import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, es_url: str) -> Iterator[config.Settings]:  # noqa: F811
    home = tmp_path_factory.mktemp("crossrec-home")
    env = {
        "CROSSREC_GATEWAY_PORT": str(free_port()),
        "CROSSREC_LOG_FLUSH_SECONDS": "0.5",
        "CROSSREC_TRAIN_DEBOUNCE_SECONDS": "2",
        "CROSSREC_TRAIN_MAX_WAIT_SECONDS": "30",
        "CROSSREC_ES_URL": es_url,
    }
    background = BackgroundStack(home, env, log=home / "up.log")
    try:
        yield background.start(timeout=90)
    finally:
        info = config.stack_file().read_text() if config.stack_file().exists() else ""
        background.stop()
        _assert_no_children_left(info)


def _assert_no_children_left(stack_file: str) -> None:
    """`crossrec up` must leave no process behind when it stops."""
    import orjson

    if not stack_file:
        return
    info = orjson.loads(stack_file)
    pids = [info["broker"]["pid"], *info["services"].values()]
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} still runs after crossrec up stopped")


@pytest_asyncio.fixture(loop_scope="session")
async def store(stack: config.Settings) -> AsyncIterator[RedisStore]:
    s = RedisStore(stack.redis_url)
    yield s
    await s.close()


@pytest.fixture
def event_log(stack: config.Settings) -> EventLog:
    return EventLog(stack.eventlog)


@pytest_asyncio.fixture(loop_scope="session")
async def app_name(store: RedisStore) -> AsyncIterator[str]:
    """A fresh app for one test; deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    await store.create_app(name)
    yield name
    await store.delete_app(name)


def run_cli(
    *args: str, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "crossrec.cli.main", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )
