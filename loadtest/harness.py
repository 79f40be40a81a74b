"""What the stack benchmarks share: a private stack for the run, and writing the results."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from crossrec import settings as config
from crossrec.stack.background import BackgroundStack
from crossrec.stack.processes import free_port

RESULTS = Path(__file__).resolve().parent / "results"
JOURNEY_EVENTS = ["purchase", "category-purchase"]  # Complete Journey: product, then category


def journey_engine(app: str, **params: Any) -> dict[str, Any]:
    """The UR engine.json the Complete Journey benchmarks train with."""
    return {
        "datasource": {"params": {"appName": app, "eventNames": JOURNEY_EVENTS}},
        "algorithms": [
            {"name": "ur", "params": {"appName": app, "eventNames": JOURNEY_EVENTS, **params}}
        ],
    }


@contextlib.contextmanager
def private_stack(env: dict[str, str] | None = None) -> Iterator[config.Settings]:
    """`crossrec up` in a temporary CROSSREC_HOME (extra environment as given), stopped (and
    removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="crossrec-bench-") as home:
        stack = BackgroundStack(
            Path(home),
            {"CROSSREC_GATEWAY_PORT": str(free_port()), **(env or {})},
            log=Path(home) / "up.log",
        )
        settings = stack.start()
        try:
            yield settings
        finally:
            stack.stop()


def write_results(name: str, result: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    (RESULTS / f"{name}.json").write_bytes(text)
    print(text.decode())
