"""`crossrec up`: the whole stack on one machine, in the foreground.

Starts the Tansu broker and creates every topic, uses the Redis at REDIS_URL (or starts an embedded
Valkey), starts each crossrec service as a child process, restarts a child that dies, writes the
connection settings to $CROSSREC_HOME/stack.json, and on SIGINT or SIGTERM stops everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import orjson

from crossrec import settings as config
from crossrec.adapters.kafka import create_topics, wait_for_broker
from crossrec.stack import processes, redis_server
from crossrec.stack.broker import start_broker

SERVICES = ("ingest", "gateway", "trainer", "query-service")
# `crossrec up --shards K`: a router and the controller (which runs the workers) instead
SHARDED_SERVICES = ("ingest", "gateway", "trainer", "router", "shard-controller")


class StackRunning(RuntimeError):
    pass


def running_stack() -> dict | None:
    """The stack file's content if its supervisor is alive."""
    path = config.stack_file()
    if not path.exists():
        return None
    info = orjson.loads(path.read_bytes())
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return None
    return info


def _service_command(name: str) -> list[str]:
    command = "query-service" if name.startswith("query-service") else name
    return [sys.executable, "-m", "crossrec.cli.main", command]


def _with_query_processes(services: tuple[str, ...], count: int) -> tuple[str, ...]:
    """CROSSREC_QUERY_PROCESSES=N: query-service, query-service-2 ... query-service-N."""
    extra = (
        [f"query-service-{k}" for k in range(2, count + 1)] if "query-service" in services else []
    )
    return (*services, *extra)


def _service_env(settings: config.Settings, home: Path) -> dict[str, str]:
    return {
        "CROSSREC_HOME": str(home),
        "CROSSREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "REDIS_URL": settings.redis_url,
        "CROSSREC_EVENTLOG_URL": settings.eventlog,
        "CROSSREC_MODELSTORE_URL": settings.modelstore,
        "CROSSREC_SHARDS": str(settings.shards),
        "PYTHONUNBUFFERED": "1",
    }


def configured_services(shards: int = 0) -> tuple[str, ...]:
    """CROSSREC_SERVICES=ingest,gateway runs a subset (default: all)."""
    known = SHARDED_SERVICES if shards else SERVICES
    wanted = os.environ.get("CROSSREC_SERVICES")
    if not wanted:
        return known
    names = tuple(n.strip() for n in wanted.split(",") if n.strip())
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"CROSSREC_SERVICES names unknown services: {', '.join(sorted(unknown))}")
    return names


def run(services: tuple[str, ...] | None = None, echo=print, shards: int = 0) -> int:
    """`shards` > 0: the trainer clusters every model into that many clusters (unless an
    engine.json says otherwise) and the sharded tier serves queries."""
    services = services or configured_services(shards)
    if running_stack():
        raise StackRunning(f"a stack already runs from {config.home()} (crossrec status)")
    home = config.home()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    settings = config.load()
    services = _with_query_processes(services, settings.query_processes)
    broker, bootstrap = start_broker(logs / "broker.log")
    embedded_redis = None
    children: dict[str, subprocess.Popen] = {}
    try:
        redis_url = settings.redis_url
        if not redis_server.reachable(redis_url):
            embedded_redis, redis_url = redis_server.start_embedded()
            echo(f"redis    embedded Valkey at {redis_url}")
        else:
            echo(f"redis    {redis_url}")
        settings = replace(settings, kafka_bootstrap=bootstrap, redis_url=redis_url)
        if shards:  # in stack.json too, so `crossrec train` from a shell clusters as well
            settings = replace(settings, shards=shards)
        asyncio.run(_prepare_broker(settings))
        echo(f"kafka    Tansu at {bootstrap} (topics created), log {logs / 'broker.log'}")
        env = _service_env(settings, home)
        for name in services:
            children[name] = processes.spawn(
                _service_command(name), logs / f"{name}.log", {**env, "CROSSREC_SERVICE_NAME": name}
            )
        _write_stack_file(settings, broker, embedded_redis is not None, children)
        echo(
            f"services {', '.join(services)} starting; `crossrec status` tells when ready. Ctrl-C stops."
        )
        restarts: dict[str, float] = {}
        owner = int(os.environ.get("CROSSREC_STOP_WITH_PID") or 0)
        while not stopping:
            time.sleep(0.3)
            if owner and not _alive(owner):
                echo(f"process {owner}, which this stack serves, is gone")
                break
            for name, child in list(children.items()):
                if child.poll() is not None and not stopping:
                    echo(
                        f"{name} exited with {child.returncode}; restarting (log {logs / (name + '.log')})"
                    )
                    if time.monotonic() - restarts.get(name, 0) < 5:
                        time.sleep(2)  # do not spin on a service that cannot start
                    restarts[name] = time.monotonic()
                    children[name] = processes.spawn(
                        _service_command(name),
                        logs / f"{name}.log",
                        {**env, "CROSSREC_SERVICE_NAME": name},
                    )
                    _write_stack_file(settings, broker, embedded_redis is not None, children)
    finally:
        echo("stopping ...")
        for child in children.values():
            processes.stop(child)
        processes.stop(broker)
        if embedded_redis is not None:
            embedded_redis.stop()
        config.stack_file().unlink(missing_ok=True)
        echo("stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


async def _prepare_broker(settings: config.Settings) -> None:
    await wait_for_broker(settings.kafka_bootstrap)
    await create_topics(settings)


def _write_stack_file(
    settings: config.Settings,
    broker: subprocess.Popen,
    embedded_redis: bool,
    children: dict[str, subprocess.Popen],
) -> None:
    body = {
        "pid": os.getpid(),
        "started": time.time(),
        "settings": config.as_dict(settings),
        "broker": {"pid": broker.pid, "bootstrap": settings.kafka_bootstrap},
        "redis": {"url": settings.redis_url, "embedded": embedded_redis},
        "services": {name: child.pid for name, child in children.items()},
    }
    path = config.stack_file()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    tmp.replace(path)
