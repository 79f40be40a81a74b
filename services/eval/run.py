"""Offline evaluation as a library: split, train, recommend, score, report.

    report = evaluate_event_log(EventLog(url), "shop", load_engine_config("engine.json"),
                                SplitSpec.parse("0.8"), EvalOptions(ks=(1, 5, 10, 20)))
    report = evaluate(app, config, events, properties, spec, options)   # events in memory

The report is a JSON-ready dict (see docs/eval.md); `write_outputs` adds the JSON file and chart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.dataset as ds
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from crossrec.adapters.eventlog import EventLog
from crossrec.core.config import EngineConfig
from crossrec.eval import report, ur
from crossrec.eval.baselines import BASELINES, BaselineParams
from crossrec.eval.baselines import recommend as recommend_baseline
from crossrec.eval.metrics import Bootstrap
from crossrec.eval.split import EvalData, Properties, SplitSpec, prepare
from crossrec.trainer.data import PROPERTY_EVENTS, EventColumns, item_properties, read_event_log


@dataclass(frozen=True)
class EvalOptions:
    ks: Sequence[int] = (1, 5, 10, 20)
    max_users: int | None = None  # sample this many test users (seeded); None: all of them
    seed: int = 0
    resamples: int = 1000
    baselines: Sequence[str] = tuple(BASELINES)
    lift: bool = True  # per-indicator variants of the engine config
    diagnostics: bool = False  # also score crossrec's models by LLR sums (see ur.llr_scorer)
    history_cap: int = 500  # ingest's newest events per user and event name
    baseline_params: BaselineParams = field(default_factory=BaselineParams)


class Steps:
    """Progress bars on stderr (or nothing) and the seconds each step took."""

    def __init__(self, console: Console | None) -> None:
        columns = (
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console) if console else None
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        started = time.perf_counter()
        task = self.progress.add_task(name, total=total) if self.progress else None

        def advance(n: int) -> None:
            if self.progress is not None and task is not None:
                self.progress.advance(task, n)

        try:
            yield advance
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)
            if self.progress is not None and task is not None:
                self.progress.update(task, total=total or 1, completed=total or 1)

    def __enter__(self) -> Steps:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()


def evaluate(
    app: str,
    config: EngineConfig,
    events: EventColumns,
    properties: Properties,
    spec: SplitSpec,
    options: EvalOptions | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate crossrec (the given engine config), the baselines and the indicator variants."""
    options = options or EvalOptions()
    ks = sorted(set(options.ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"k must be positive integers, got {list(options.ks)}")
    unknown = set(options.baselines) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {list(BASELINES)}")
    scored: list[report.Scored] = []
    with Steps(console) as steps:
        with steps.step("split"):
            data = prepare(
                events,
                properties,
                config,
                spec,
                max_users=options.max_users,
                seed=options.seed,
                history_cap=options.history_cap,
            )
        if not data.users:
            raise ValueError(
                f"no test users: nobody with primary events on both sides of {data.stats['cut']}"
            )
        run = _Run(app, data, ks, steps, options)
        main = run.crossrec("crossrec", config)
        scored += main
        scored += [run.baseline(name, config.primary) for name in options.baselines]
        if options.lift and len(config.indicators) > 1:
            for label, keep in ur.indicator_variants(config):
                if len(keep) == len(config.indicators):
                    variants = [dataclasses.replace(s, name=label, kind="indicators") for s in main]
                else:
                    variants = run.crossrec(label, ur.with_indicators(config, keep), "indicators")
                scored += variants
        with steps.step("bootstrap"):
            boot = Bootstrap(len(data.users), options.resamples, options.seed)
            meta = {
                "app": app,
                "created": datetime.now(tz=UTC).isoformat(timespec="seconds"),
                "engine": dict(config.source),
                "options": {
                    "ks": ks,
                    "max_users": options.max_users,
                    "seed": options.seed,
                    "resamples": options.resamples,
                    "confidence": 0.95,
                    "history_cap": options.history_cap,
                    "diagnostics": options.diagnostics,
                    "baseline_params": dataclasses.asdict(options.baseline_params),
                },
            }
            result = report.build(scored, data, ks, boot, meta)
    result["seconds"] = steps.seconds
    return result


class _Run:
    """Trains and asks one model after another on the same split, timing each step."""

    def __init__(
        self, app: str, data: EvalData, ks: list[int], steps: Steps, options: EvalOptions
    ) -> None:
        self.app, self.data, self.ks, self.steps, self.options = app, data, ks, steps, options

    def _timed(
        self, name: str, recs: Callable[[Callable[[int], None]], np.ndarray]
    ) -> tuple[np.ndarray, float]:
        with self.steps.step(name, len(self.data.users)) as advance:
            out = recs(advance)
        return out, self.steps.seconds[name]

    def crossrec(
        self, label: str, config: EngineConfig, kind: str = "crossrec"
    ) -> list[report.Scored]:
        """The engine's answers and, with diagnostics, the same model scored by LLR sums."""
        data, k, names = self.data, self.ks[-1], list(config.indicator_names)
        step = label if kind == "crossrec" else f"crossrec: {label}"
        with self.steps.step(f"train {step}"):
            model = ur.train(self.app, config, data, label)
        trained = self.steps.seconds[f"train {step}"]
        recs, took = self._timed(f"recommend {step}", lambda a: ur.recommend(model, data, k, a))
        out = [report.score(label, kind, names, recs, data, self.ks, "ur")]
        out[0].seconds = {"train": trained, "recommend": took}
        if self.options.diagnostics:
            scorer = ur.llr_scorer(model, data)
            recs, took = self._timed(
                f"LLR-weighted {step}", lambda a: recommend_baseline(data, scorer, k, a)
            )
            name = f"{label} (LLR-weighted, diagnostic)" if kind == "crossrec" else label
            kind = "diagnostic" if kind == "crossrec" else kind
            out.append(report.score(name, kind, names, recs, data, self.ks, "llr"))
            out[1].seconds = {"train": trained, "recommend": took}
        return out

    def baseline(self, name: str, primary: str) -> report.Scored:
        data = self.data
        with self.steps.step(f"train {name}"):
            scorer = BASELINES[name](data, self.options.baseline_params)
        recs, took = self._timed(
            f"recommend {name}", lambda a: recommend_baseline(data, scorer, self.ks[-1], a)
        )
        out = report.score(name, "baseline", [primary], recs, data, self.ks)
        out.seconds = {"train": self.steps.seconds[f"train {name}"], "recommend": took}
        return out


def read_as_of(
    event_log: EventLog, app: str, config: EngineConfig
) -> tuple[EventColumns, Callable[[int], dict[str, dict[str, Any]]]]:
    """The app's usage events, and its item properties as of any time."""
    data = read_event_log(event_log, app, config)
    table = event_log.read(
        app,
        ["entity_id", "event", "properties", "event_time"],
        (ds.field("entity_type") == "item") & ds.field("event").isin(list(PROPERTY_EVENTS)),
    )
    millis = table["event_time"].cast("int64").to_numpy()

    def as_of(cut_ms: int) -> dict[str, dict[str, Any]]:
        return item_properties(table.filter(millis < cut_ms))

    return data.events, as_of


def evaluate_event_log(
    event_log: EventLog,
    app: str,
    config: EngineConfig,
    spec: SplitSpec,
    options: EvalOptions | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """`evaluate` on an app's event log, with item properties as they were at T."""
    events, as_of = read_as_of(event_log, app, config)
    if len(events) == 0:
        raise ValueError(
            f"app {app!r} has no events named {', '.join(config.event_to_indicator())}"
        )
    return evaluate(app, config, events, as_of, spec, options, console)


def write_outputs(result: dict[str, Any], json_path: Path | None, chart_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_bytes(
            orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
        )
    if chart_path is not None:
        from crossrec.eval.chart import draw

        draw(result, chart_path)
