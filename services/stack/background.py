"""The stack as a child process, for the demo, the tests and the benchmarks: start `crossrec up`,
wait until every part is ready, stop it with SIGTERM (it cleans up after itself)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from crossrec import settings as config
from crossrec.stack.status import check


def wait_ready(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    rows: list = []
    while time.monotonic() < deadline:
        rows, ready = asyncio.run(check())
        if ready:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the stack did not become ready ({rows}); see $CROSSREC_HOME/logs")


class BackgroundStack:
    """`crossrec up` in CROSSREC_HOME=home; extra environment (e.g. a gateway port) as given."""

    def __init__(
        self, home: Path, env: dict[str, str] | None = None, log: Path | None = None
    ) -> None:
        self.home = home
        # a stack started for a test run, a benchmark or the demo ends with it, even if it crashes
        self.env = {
            **os.environ,
            "CROSSREC_HOME": str(home),
            "CROSSREC_STOP_WITH_PID": str(os.getpid()),
            **(env or {}),
        }
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> config.Settings:
        os.environ.update(
            {k: v for k, v in self.env.items() if k.startswith(("CROSSREC_", "REDIS_"))}
        )
        output = open(self.log, "ab") if self.log else None  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crossrec.cli.main", "up"],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=output is not None,
        )
        wait_ready(timeout)
        return config.load()

    def stop(self, timeout: float = 60) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)

    def __enter__(self) -> config.Settings:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
