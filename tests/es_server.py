"""An Elasticsearch-API server for the tests marked `elasticsearch`: the one at CROSSREC_ES_URL
(with the CROSSREC_ES_* auth and TLS settings), else noida-db (PyPI; it emulates the ES 8 REST
API) started on a free loopback port with its data in a temporary directory, and stopped at the
end of the session. Every test writes under its own index prefix, so a shared real cluster is
left as it was.

tests/conftest.py imports these fixtures, so every test can use them; the stack the integration
tests start is pointed at the same server, for the apps whose engine.json chooses Elasticsearch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from pathlib import Path

import pytest
import pytest_asyncio
from elasticsearch import AsyncElasticsearch

from crossrec.adapters import elasticsearch as esa
from crossrec.stack.processes import free_port


def _noida_binary() -> Path:
    try:
        binary = Path(str(resources.files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError:
        pytest.fail("set CROSSREC_ES_URL or install noida-db (pip install noida-db)")
    binary.chmod(0o755)
    return binary


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"noida-db exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"noida-db did not answer at {url} within {timeout} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("CROSSREC_ES_URL")
    if given:
        yield given
        return
    directory = tmp_path_factory.mktemp("noida")
    port = free_port()
    log = directory / "noida.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(_noida_binary()), "start", "--only", "elasticsearch",
             "--elasticsearch-port", str(port), "--data-dir", str(directory / "data")],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def es_settings(es_url: str) -> esa.EsSettings:
    """Connection settings from the environment, a fresh index prefix per test."""
    base = esa.EsSettings.from_env()
    prefix = f"crossrec-test-{uuid.uuid4().hex[:8]}-"
    return dataclasses.replace(base, hosts=(es_url,), index_prefix=prefix, bulk_chunk=50)


@pytest_asyncio.fixture(loop_scope="session")
async def es(es_settings: esa.EsSettings) -> AsyncIterator[AsyncElasticsearch]:
    client = esa.connect(es_settings)
    try:
        yield client
    finally:
        found = await client.indices.get(index=f"{es_settings.index_prefix}*")
        for name in found.body:
            await client.options(ignore_status=404).indices.delete(index=name)
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def noida(es: AsyncElasticsearch) -> bool:
    """Whether the server is the emulator (whose raw scores differ from Elasticsearch's)."""
    return (await es.info())["version"].get("build_hash") == "noida"
