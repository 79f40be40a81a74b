"""`crossrec eval`: the offline evaluation of an app's event log (register with
`app.command("eval")(eval_command)` in crossrec.cli.main)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give k as integers, e.g. 1,5,10,20") from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter(f"{text!r}: every k must be at least 1")
    return ks


def eval_command(
    app: Annotated[str, typer.Option("--app", help="The app's name.")],
    engine: Annotated[
        Path, typer.Option("--engine", exists=True, dir_okay=False, help="The UR engine.json.")
    ],
    split: Annotated[
        str,
        typer.Option(help="T: a fraction of the events' time range (0.8) or a date (2011-10-01)."),
    ] = "0.8",
    k: Annotated[str, typer.Option("--k", help="Cut-offs, comma separated.")] = "1,5,10,20",
    out: Annotated[
        Path | None, typer.Option(help="JSON report file (default: eval-APP.json).")
    ] = None,
    chart: Annotated[Path | None, typer.Option(help="PNG chart (default: eval-APP.png).")] = None,
    max_users: Annotated[
        int | None, typer.Option(help="Sample this many test users (seeded); default: all.")
    ] = None,
    baselines: Annotated[
        str, typer.Option(help="Comma separated: popularity, item-kNN, ALS; empty for none.")
    ] = "popularity,item-kNN,ALS",
    lift: Annotated[bool, typer.Option(help="Per-indicator lift (trains more models).")] = True,
    diagnostics: Annotated[
        bool, typer.Option(help="Also score crossrec's models by summed LLR (never served).")
    ] = False,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples over users.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of sampling and bootstrap.")] = 0,
) -> None:
    """Evaluate the engine config offline on a time split of the app's event log, against
    popularity, item-kNN and ALS baselines, with per-indicator lift."""
    from crossrec import settings
    from crossrec.adapters.eventlog import EventLog
    from crossrec.core.config import ConfigError, load_engine_config
    from crossrec.eval.report import print_report
    from crossrec.eval.run import EvalOptions, evaluate_event_log, write_outputs
    from crossrec.eval.split import SplitSpec

    err = Console(stderr=True)
    ks = parse_ks(k)
    try:
        config = load_engine_config(engine)
        spec = SplitSpec.parse(split)
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    current = settings.load()
    options = EvalOptions(
        ks=ks,
        max_users=max_users,
        seed=seed,
        resamples=resamples,
        baselines=[b.strip() for b in baselines.split(",") if b.strip()],
        lift=lift,
        diagnostics=diagnostics,
        history_cap=current.history_cap,
    )
    try:
        result = evaluate_event_log(EventLog(current.eventlog), app, config, spec, options, err)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    out = out or Path(f"eval-{app}.json")
    chart = chart or Path(f"eval-{app}.png")
    write_outputs(result, out, chart)
    print_report(result, Console(), 10 if 10 in ks else ks[-1])
    err.print(f"report: {out}, chart: {chart}")
