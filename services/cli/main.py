"""`crossrec`: the one command line. Every command finds the stack through $CROSSREC_HOME."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from crossrec import settings as config

app = typer.Typer(help="crossrec: a real-time recommender on Kafka.", no_args_is_help=True)
apps_cli = typer.Typer(
    help="Apps and their access keys (PredictionIO's `pio app`).", no_args_is_help=True
)
app.add_typer(apps_cli, name="app")
console = Console()
err = Console(stderr=True)

AppName = Annotated[str, typer.Option("--app", help="The app's name.")]


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _store():
    from crossrec.adapters.redis_store import RedisStore

    return RedisStore(config.load().redis_url)


async def _require_app(store, name: str) -> None:
    if name not in await store.app_names():
        _fail(f"no app named {name!r} (crossrec app list)")


# -- the stack ---------------------------------------------------------------------------------
@app.command()
def up(
    shards: int = typer.Option(
        0,
        "--shards",
        envvar="CROSSREC_SHARDS",
        help="Serve through the sharded tier: K item clusters per model, a router, and worker "
        "replicas sized by the replication controller (0: one query service, unsharded).",
        min=0,
    ),
) -> None:
    """Run the whole stack in the foreground: Kafka (Tansu), Redis, and every service."""
    from crossrec.stack.supervisor import StackRunning, run

    try:
        raise typer.Exit(run(echo=console.print, shards=shards))
    except StackRunning as exc:
        _fail(str(exc))


@app.command()
def demo() -> None:
    """The main job on the embedded default: start the stack, stream real data through it."""
    from crossrec.cli.demo import run

    raise typer.Exit(run(console))


@app.command()
def status() -> None:
    """Say what runs where; exit 0 only when every part is ready."""
    from crossrec.stack.status import check

    rows, ready = asyncio.run(check())
    table = Table("part", "state", "where")
    for part, state, where in rows:
        table.add_row(
            part, "[green]ready[/green]" if state == "ready" else f"[red]{state}[/red]", where
        )
    console.print(table)
    raise typer.Exit(0 if ready else 1)


@app.command()
def ingest() -> None:
    """Run the ingest service (a faust worker) in the foreground."""
    from crossrec.ingest.app import create_app

    sys.argv = [sys.argv[0], "worker", "--without-web", "--loglevel", "info"]
    create_app().main()


@app.command()
def gateway() -> None:
    """Run the HTTP gateway (PredictionIO-compatible) in the foreground."""
    from crossrec.gateway.app import main

    main()


@app.command()
def trainer() -> None:
    """Run the trainer service (debounced retraining on item changes) in the foreground."""
    from crossrec.trainer.service import main

    main()


@app.command("query-service")
def query_service() -> None:
    """Run a query service (answers Recommend over gRPC-over-Kafka) in the foreground."""
    from crossrec.query.service import main

    main()


@app.command("shard-worker")
def shard_worker(
    app_name: AppName,
    cluster: Annotated[int, typer.Option("--cluster", min=0, help="The cluster to serve.")],
) -> None:
    """Run one worker replica of the sharded tier: one cluster of the app's live model."""
    from crossrec.shard.worker import main

    raise typer.Exit(main(app_name, cluster))


@app.command()
def router(
    request_topic: Annotated[
        str | None, typer.Option(help="Request topic (default: the query service's).")
    ] = None,
    group: Annotated[str, typer.Option(help="Consumer group on it.")] = "crossrec-query",
    fan_out: Annotated[
        int | None, typer.Option(min=1, help="Clusters asked per request (default: engine.json)")
    ] = None,
    margin_ms: Annotated[
        int, typer.Option(min=0, help="Gather until the deadline less this margin.")
    ] = 250,
    history_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds a history read may take (then: none).")
    ] = 0.2,
) -> None:
    """Run a router of the sharded tier: answers Recommend requests by fanning out to workers."""
    from crossrec.shard.router import main

    main(request_topic, group, fan_out, margin_ms, history_timeout)


@app.command("shard-controller")
def shard_controller() -> None:
    """Run the replication controller of the sharded tier: worker replicas for every cluster of
    every sharded app, sized by request rate and consumer lag (CROSSREC_SHARD_* settings)."""
    from crossrec.shard.controller import main

    main()


# -- apps --------------------------------------------------------------------------------------
@apps_cli.command("new")
def app_new(name: str) -> None:
    """Create an app and print its access key."""
    from crossrec.core.names import InvalidName, check_app_name

    try:
        check_app_name(name)
    except InvalidName as exc:
        _fail(str(exc))

    async def create():
        store = _store()
        try:
            return await store.create_app(name)
        finally:
            await store.close()

    try:
        created = asyncio.run(create())
    except ValueError as exc:
        _fail(str(exc))
    console.print(f"app {created.name} created\naccess key: {created.access_key}")


@apps_cli.command("list")
def app_list() -> None:
    """List apps with their access keys."""

    async def listing():
        store = _store()
        try:
            return await store.apps()
        finally:
            await store.close()

    table = Table("name", "access key")
    for a in asyncio.run(listing()):
        table.add_row(a.name, a.access_key)
    console.print(table)


@apps_cli.command("delete")
def app_delete(
    name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False
) -> None:
    """Delete an app with all its data: Redis state, event log, access key."""
    from crossrec.adapters.eventlog import EventLog

    if not yes and not typer.confirm(f"Delete app {name!r} and all its events?"):
        raise typer.Exit(1)

    async def delete():
        store = _store()
        try:
            return await store.delete_app(name)
        finally:
            await store.close()

    if not asyncio.run(delete()):
        _fail(f"no app named {name!r}")
    EventLog(config.load().eventlog).delete_app(name)
    console.print(f"app {name} deleted")


# -- moving events -----------------------------------------------------------------------------
def _bytes_progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


@app.command("import")
def import_events(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="PIO JSON-lines file.")],
    app_name: AppName,
) -> None:
    """Produce a PredictionIO JSON-lines file (the `pio export` format) into an app."""
    from crossrec.client.jsonl import import_file
    from crossrec.client.producer import EventProducer

    async def run():
        store = _store()
        try:
            await _require_app(store, app_name)
        finally:
            await store.close()
        with _bytes_progress() as progress:
            task = progress.add_task(f"importing {file.name}", total=file.stat().st_size)
            async with EventProducer() as producer:
                return await import_file(
                    producer, app_name, file, lambda n: progress.advance(task, n)
                )

    report = asyncio.run(run())
    for number, reason in report.problems:
        err.print(f"line {number}: {reason}")
    console.print(f"{report.accepted} accepted, {report.rejected} rejected")


@app.command("export")
def export_events(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="Output JSON-lines file.")],
    app_name: AppName,
) -> None:
    """Write an app's event log as PredictionIO JSON-lines."""
    from crossrec.adapters.eventlog import EventLog
    from crossrec.client.jsonl import export_file

    count = export_file(EventLog(config.load().eventlog), app_name, file)
    console.print(f"{count} events written to {file}")


@app.command()
def replay(
    app_name: AppName,
    clear: Annotated[
        bool, typer.Option("--clear", help="Delete the app's Redis state first.")
    ] = False,
) -> None:
    """Rebuild an app's Redis state (history, item properties) from its event log."""
    from crossrec.adapters.eventlog import EventLog
    from crossrec.ingest.replay import replay as run_replay

    settings = config.load()
    event_log = EventLog(settings.eventlog)

    async def run() -> int:
        store = _store()
        try:
            await _require_app(store, app_name)
            with Progress(console=err) as progress:
                task = progress.add_task("replaying events", total=None)
                return await run_replay(
                    store,
                    event_log,
                    app_name,
                    settings.history_cap,
                    clear,
                    lambda n: progress.advance(task, n),
                )
        finally:
            await store.close()

    console.print(f"{asyncio.run(run())} events replayed into Redis for app {app_name}")


# -- models and queries ------------------------------------------------------------------------
@app.command()
def train(
    app_name: AppName,
    engine: Annotated[
        Path, typer.Option("--engine", exists=True, dir_okay=False, help="The UR engine.json.")
    ],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for query services to go live.")
    ] = 60,
) -> None:
    """Train a new model version now; return when it is live."""
    import orjson

    from crossrec.core.config import ConfigError
    from crossrec.trainer.jobs import run_training, summary
    from crossrec.trainer.train import TrainError

    try:
        engine_doc = orjson.loads(engine.read_bytes())
    except orjson.JSONDecodeError as exc:
        _fail(f"{engine}: not JSON: {exc}")

    async def run() -> dict:
        store = _store()
        try:
            await _require_app(store, app_name)
            # another train of the app (the trainer service's) finishes first, then ours runs
            manifest = await run_training(
                config.load(), store.redis, app_name, engine_doc, wait=600
            )
            await _wait_live(store, app_name, manifest["version"], wait)
            return manifest
        finally:
            await store.close()

    try:
        manifest = asyncio.run(run())
    except ConfigError as exc:
        _fail(f"{engine}: {exc}")
    except TrainError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"could not write the model: {exc}")
    console.print(f"app {app_name} trained: {summary(manifest)}")


async def _wait_live(store, app_name: str, version: str, timeout: float) -> None:
    """Until every running query service answers with the version (none running: at once)."""
    import time

    from crossrec.stack.supervisor import running_stack

    info = running_stack()
    servers = [  # every query-service process (CROSSREC_QUERY_PROCESSES) and the router
        (name, pid)
        for name, pid in (info or {}).get("services", {}).items()
        if name.startswith("query-service") or name == "router"
    ]
    deadline = time.monotonic() + timeout
    from crossrec.stack import health

    while servers and time.monotonic() < deadline:
        beats = [await health.read(store.redis, name, pid) for name, pid in servers]
        serving = [b for b in beats if b and b.get("versions", {}).get(app_name)]
        if all(b.get("versions", {}).get(app_name) == version for b in serving):
            return
        await asyncio.sleep(0.3)


@app.command()
def models(app_name: AppName) -> None:
    """List an app's model versions with their manifests' key facts."""
    from crossrec.adapters.modelstore import ModelStore

    store = ModelStore(config.load().modelstore)
    live = store.live(app_name)
    table = Table("version", "live", "published", "items", "correlators", "train s")
    for version in store.versions(app_name):
        manifest = store.manifest(app_name, version)
        counts = manifest.get("counts", {})
        timings = manifest.get("info", {}).get("timings", {})
        table.add_row(
            version,
            "yes" if version == live else "",
            str(manifest.get("published", "")),
            f"{counts.get('documents', 0):,}",
            ", ".join(f"{n} {c:,}" for n, c in counts.get("correlators", {}).items()),
            f"{sum(timings.values()):.2f}" if timings else "",
        )
    console.print(table)


@app.command()
def query(
    app_name: AppName,
    query_json: Annotated[
        str, typer.Argument(help="A UR query as JSON, or - for one per line on stdin.")
    ],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 5.0,
) -> None:
    """Ask for recommendations; print the response JSON (one line per query with -)."""
    import orjson

    from crossrec.client.recommender import Recommender
    from crossrec.rpc.protocol import RpcError

    lines = sys.stdin if query_json == "-" else [query_json]

    async def run() -> int:
        failures = 0
        async with Recommender(timeout=timeout) as client:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    doc = orjson.loads(line)
                    if not isinstance(doc, dict):
                        raise ValueError("a query must be a JSON object")
                    answer = await client.recommend(app_name, doc)
                except (orjson.JSONDecodeError, ValueError) as exc:
                    answer, failures = (
                        {"error": {"code": "INVALID_ARGUMENT", "message": str(exc)}},
                        failures + 1,
                    )
                except RpcError as exc:
                    answer, failures = (
                        {"error": {"code": exc.code.name, "message": exc.message}},
                        failures + 1,
                    )
                sys.stdout.write(orjson.dumps(answer).decode() + "\n")
                sys.stdout.flush()
        return failures

    failures = asyncio.run(run())
    raise typer.Exit(1 if failures and query_json != "-" else 0)


def _register_eval() -> None:
    from crossrec.eval.cli import eval_command

    app.command("eval")(eval_command)


_register_eval()

if __name__ == "__main__":
    app()
