"""`crossrec up` with CROSSREC_STOP_WITH_PID: a crashed test run or benchmark leaves no stack
behind (its own broker and services, in a CROSSREC_HOME of its own)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from support import start_crossrec


def test_a_stack_stops_when_the_process_it_serves_is_gone(tmp_path: Path) -> None:
    """CROSSREC_STOP_WITH_PID: a crashed test run or benchmark leaves no stack behind."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    up, _ = start_crossrec("up", home=tmp_path, owner_pid=owner.pid, CROSSREC_SERVICES="gateway")
    try:
        stack_file = tmp_path / "stack.json"
        deadline = time.monotonic() + 60
        while not stack_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stack_file.exists(), "the stack did not start"
        info = orjson.loads(stack_file.read_bytes())
        assert up.poll() is None  # serving while its owner lives
        owner.kill()
        owner.wait()
        output, _ = up.communicate(timeout=60)
        assert up.returncode == 0
        assert f"process {owner.pid}, which this stack serves, is gone" in output
        for pid in [info["broker"]["pid"], *info["services"].values()]:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        owner.kill()
        if up.poll() is None:
            up.kill()
