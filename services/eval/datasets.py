"""The committed evaluations: the two real data sets (DESIGN §7), each written to a temporary event
log in the format ingest writes, then evaluated by the same code as `crossrec eval`
(`evaluate_event_log`), with no Kafka or Redis involved.

    python -m crossrec.eval.datasets online-retail --diagnostics     # purchase, cancel
    python -m crossrec.eval.datasets complete-journey --diagnostics  # purchase, category-purchase

Each run writes loadtest/results/eval-<name>.json, eval-<name>.png and the engine.json it used
(eval-<name>-engine.json), and prints the tables.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

from crossrec.adapters.eventlog import SCHEMA, EventLog, Segment
from crossrec.core.config import parse_engine_config
from crossrec.core.events import parse_time
from crossrec.eval.report import print_report
from crossrec.eval.run import EvalOptions, evaluate_event_log, write_outputs
from crossrec.eval.split import SplitSpec

RESULTS = Path(__file__).resolve().parents[2] / "loadtest" / "results"
SEGMENT_EVENTS = 250_000


def engine(app: str, indicators: list[str]) -> dict[str, Any]:
    """A plain UR engine.json: the indicators in order, default settings, a fixed seed."""
    return {
        "datasource": {"params": {"appName": app}},
        "algorithms": [
            {
                "name": "ur",
                "params": {
                    "appName": app,
                    "indicators": [{"name": n} for n in indicators],
                    "seed": 1,
                },
            }
        ],
    }


def online_retail() -> dict[str, np.ndarray]:
    from crossrec.datasets import online_retail_events

    rows: dict[str, list[Any]] = {
        k: [] for k in ("event", "entity_type", "user", "target", "properties", "time")
    }
    for e in online_retail_events():
        rows["event"].append(e["event"])
        rows["entity_type"].append(e["entityType"])
        rows["user"].append(e["entityId"])
        rows["target"].append(e.get("targetEntityId"))
        rows["properties"].append(
            orjson.dumps(e["properties"]).decode() if "properties" in e else None
        )
        rows["time"].append(parse_time(e["eventTime"]))
    return {k: np.array(v, dtype=np.int64 if k == "time" else object) for k, v in rows.items()}


def complete_journey() -> dict[str, np.ndarray]:
    from crossrec.datasets import complete_journey_columns

    columns = complete_journey_columns()
    n = len(columns["event"])
    return {
        **columns,
        "entity_type": np.full(n, "user", dtype=object),
        "properties": np.full(n, None, dtype=object),
        "time": columns["time"].astype("datetime64[ms]").astype(np.int64),
    }


DATASETS = {
    "online-retail": (online_retail, ["purchase", "cancel"], "retail"),
    "complete-journey": (complete_journey, ["purchase", "category-purchase"], "journey"),
}


def write_event_log(log: EventLog, app: str, columns: dict[str, np.ndarray]) -> None:
    """The columns as event-log segments of partition 0, as ingest names and writes them."""
    directory = log.app_dir(app)
    log.fs.create_dir(directory, recursive=True)
    n = len(columns["event"])
    for first in range(0, n, SEGMENT_EVENTS):
        part = slice(first, min(n, first + SEGMENT_EVENTS))
        size = part.stop - first
        targets = columns["target"][part]
        has_target = np.array([t is not None for t in targets])
        times = pa.array(columns["time"][part], pa.timestamp("ms", tz="UTC"))
        table = pa.table(
            {
                "event_id": pa.array([f"e{i}" for i in range(first, part.stop)]),
                "event": pa.array(columns["event"][part], pa.string()),
                "entity_type": pa.array(columns["entity_type"][part], pa.string()),
                "entity_id": pa.array(columns["user"][part], pa.string()),
                "target_entity_type": pa.array(np.where(has_target, "item", None), pa.string()),
                "target_entity_id": pa.array(targets, pa.string()),
                "properties": pa.array(columns["properties"][part], pa.string()),
                "event_time": times,
                "tags": pa.nulls(size, pa.list_(pa.string())),
                "pr_id": pa.nulls(size, pa.string()),
                "creation_time": times,
                "partition": pa.array(np.zeros(size, dtype=np.int32)),
                "offset": pa.array(np.arange(first, part.stop, dtype=np.int64)),
                "index": pa.array(np.zeros(size, dtype=np.int32)),
            },
            schema=SCHEMA,
        )
        name = Segment.name(0, first, part.stop - 1)
        pq.write_table(table, f"{directory}/{name}", compression="zstd")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crossrec.eval.datasets", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--split", default="0.8", help="a fraction of the time range or a date")
    parser.add_argument("--k", default="1,5,10,20")
    parser.add_argument("--max-users", type=int, default=None, help="sample test users (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diagnostics", action="store_true", help="add the LLR-weighted rows")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load, indicators, app = DATASETS[args.dataset]
    doc = engine(app, indicators)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"eval-{args.dataset}-engine.json").write_bytes(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
    )
    options = EvalOptions(
        ks=[int(k) for k in args.k.split(",")],
        max_users=args.max_users,
        seed=args.seed,
        diagnostics=args.diagnostics,
    )
    err = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        with err.status(f"writing {args.dataset} to a temporary event log"):
            log = EventLog(tmp)
            write_event_log(log, app, load())
        result = evaluate_event_log(
            log, app, parse_engine_config(doc), SplitSpec.parse(args.split), options, err
        )
    result["dataset"] = args.dataset
    given = sys.argv[1:] if argv is None else argv
    result["command"] = f"python -m crossrec.eval.datasets {shlex.join(given)}"
    write_outputs(
        result,
        args.out_dir / f"eval-{args.dataset}.json",
        args.out_dir / f"eval-{args.dataset}.png",
    )
    print_report(result, Console(width=140), 10 if 10 in options.ks else max(options.ks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
