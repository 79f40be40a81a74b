"""What the benchmarks share: a private stack for the run, the machine's speed, writing the results."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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


def percentile(values: list[float], q: float, digits: int = 2) -> float | None:
    """The q-quantile of the values (nearest rank below), rounded; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))], digits)


def stack_pids() -> dict[str, int]:
    """The running stack's processes by name: "broker" and each service (`crossrec up`)."""
    info = orjson.loads(config.stack_file().read_bytes())
    return {"broker": info["broker"]["pid"], **info["services"]}


def redis_pids() -> list[int]:
    """Redis or Valkey servers on this machine (the stack uses one it finds, else its own)."""
    found = subprocess.run(["pgrep", "-f", "redis-server|valkey"], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


Reading = tuple[float, dict[str, float]]  # (monotonic time, CPU seconds per role)


class CpuMeter:
    """Cores used by each role's processes between two readings (/proc/PID/stat), and by the
    whole machine ("machine": every non-idle core-second in /proc/stat, kernel work and
    processes outside the roles, e.g. a Redis the stack did not start, included)."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.tick = os.sysconf("SC_CLK_TCK")

    def read(self) -> Reading:
        used = {}
        for role, pids in self.roles.items():
            used[role] = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):  # a process that has gone counts no more
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    used[role] += (int(fields[11]) + int(fields[12])) / self.tick
        with open("/proc/stat") as f:  # cpu user nice system idle iowait irq softirq steal
            ticks = [int(t) for t in f.readline().split()[1:9]]
        used["machine"] = (sum(ticks) - ticks[3] - ticks[4]) / self.tick
        return time.monotonic(), used

    @staticmethod
    def cores(before: Reading, after: Reading) -> dict[str, float]:
        wall = after[0] - before[0]
        return {role: round((after[1][role] - before[1][role]) / wall, 2) for role in after[1]}


def write_results(name: str, result: Any) -> None:
    RESULTS.mkdir(exist_ok=True)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    (RESULTS / f"{name}.json").write_bytes(text)
    print(text.decode())


def host_speed() -> dict[str, float]:
    """Two fixed workloads, best of 5, so that runs on different machines can be compared: the
    session machines differ by up to 2x on the same code."""
    values = np.random.default_rng(0).random(10_000_000)
    numbers = list(range(1_000_000))
    numpy_ms = min(timeit.repeat(values.sum, number=1, repeat=5)) * 1000
    python_ms = min(timeit.repeat(lambda: sum(n * 2 for n in numbers), number=1, repeat=5)) * 1000
    return {"numpy_sum_10M_ms": round(numpy_ms, 2), "python_loop_1M_ms": round(python_ms, 1)}
