"""Training benchmark on The Complete Journey (DESIGN §6: 1.5 M events in <= 30 s, <= 4 GB).

Trains `purchase` (household -> product) with `category-purchase` (household -> category) at
10 %, 30 % and 100 % of the events, each size in its own child process so peak memory is that
size's alone: once from in-memory columns, once from an event log written to a temporary
directory (Parquet segments as ingest writes them) through `train_app`. Prints a table and writes
loadtest/results/train.json.

    python -m loadtest.bench_train [--fractions 0.1 0.3 1] [--sources memory eventlog]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crossrec.adapters.eventlog import SCHEMA, EventLog, Segment
from crossrec.adapters.modelstore import ModelStore
from crossrec.core.config import parse_engine_config
from crossrec.core.idmap import IdMap
from crossrec.datasets import complete_journey_columns
from crossrec.trainer.build import Timer, build_model
from crossrec.trainer.data import from_columns
from crossrec.trainer.train import train_app
from loadtest.harness import journey_engine

APP = "journey"
ENGINE = journey_engine(
    APP,
    rankings=[
        {"type": "popular", "duration": "3650 days"},
        {"type": "trending", "duration": "30 days"},
        {"type": "hot", "duration": "30 days"},
    ],
    seed=1,
)
RESULTS = Path(__file__).parent / "results" / "train.json"
SEGMENT_EVENTS = 250_000


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_event_log(root: str, columns: dict[str, np.ndarray]) -> EventLog:
    """The columns as event-log segments (the schema and names ingest writes), vectorised."""
    log = EventLog(root)
    n = len(columns["event"])
    time_ms = columns["time"].astype("datetime64[ms]").astype(np.int64)
    directory = log.app_dir(APP)
    log.fs.create_dir(directory, recursive=True)
    for first in range(0, n, SEGMENT_EVENTS):
        last = min(n, first + SEGMENT_EVENTS) - 1
        part = slice(first, last + 1)
        size = last - first + 1
        table = pa.table(
            {
                "event_id": pa.array([f"e{i}" for i in range(first, last + 1)]),
                "event": pa.array(columns["event"][part], pa.string()),
                "entity_type": pa.array(np.full(size, "user", dtype=object), pa.string()),
                "entity_id": pa.array(columns["user"][part], pa.string()),
                "target_entity_type": pa.array(np.full(size, "item", dtype=object), pa.string()),
                "target_entity_id": pa.array(columns["target"][part], pa.string()),
                "properties": pa.nulls(size, pa.string()),
                "event_time": pa.array(time_ms[part], pa.timestamp("ms", tz="UTC")),
                "tags": pa.nulls(size, pa.list_(pa.string())),
                "pr_id": pa.nulls(size, pa.string()),
                "creation_time": pa.array(time_ms[part], pa.timestamp("ms", tz="UTC")),
                "partition": pa.array(np.zeros(size, dtype=np.int32)),
                "offset": pa.array(np.arange(first, last + 1, dtype=np.int64)),
                "index": pa.array(np.zeros(size, dtype=np.int32)),
            },
            schema=SCHEMA,
        )
        pq.write_table(table, f"{directory}/{Segment.name(0, first, last)}", compression="zstd")
    return log


def child(fraction: float, source: str) -> dict:
    config = parse_engine_config(ENGINE)
    started = time.perf_counter()
    columns = complete_journey_columns(fraction)
    load_s = time.perf_counter() - started
    now_ms = int(columns["time"].max().astype("datetime64[ms]").astype(np.int64)) + 1
    events = len(columns["event"])
    id_maps = id_map_memory(columns)
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(f"{tmp}/models")
        if source == "eventlog":
            started = time.perf_counter()
            log = write_event_log(f"{tmp}/log", columns)
            write_s = time.perf_counter() - started
            del columns
            rss_before = rss_mb()
            started = time.perf_counter()
            manifest = train_app(log, APP, config, store, now=now_ms)
            total = time.perf_counter() - started
            phases = manifest["info"]["timings"]
        else:
            write_s = 0.0
            rss_before = rss_mb()
            timer = Timer()
            started = time.perf_counter()
            data = from_columns(columns)
            timer.lap("read")
            model = build_model(APP, config, data, {}, now_ms=now_ms, version="bench", timer=timer)
            manifest = store.publish(model)
            total = time.perf_counter() - started
            phases = manifest["info"]["timings"]
        phases = dict(phases, publish=round(total - sum(phases.values()), 3))
        counts = manifest["info"]["indicators"]
    return {
        "fraction": fraction,
        "source": source,
        "events": events,
        "users": manifest["info"]["users"],
        "items": manifest["info"]["primary_items"],
        "correlators": {k: v.get("correlators", 0) for k, v in counts.items()},
        "candidates": {k: v.get("candidates", 0) for k, v in counts.items()},
        "train_s": round(total, 2),
        "phases_s": phases,
        "dataset_load_s": round(load_s, 2),
        "event_log_write_s": round(write_s, 2),
        "rss_before_train_mb": round(rss_before),
        "peak_rss_mb": round(peak_mb()),
        "id_map_bytes_per_id_byte": id_maps,
    }


def id_map_memory(columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Bytes an IdMap holds per byte of id string (DESIGN §6: <= 1.5), for the data set's users
    (households, 3.6 bytes on average), products and categories."""
    kinds = {
        "users": columns["user"],
        "products": columns["target"][columns["event"] == "purchase"],
        "categories": columns["target"][columns["event"] == "category-purchase"],
    }
    out = {}
    for kind, ids in kinds.items():
        id_map, _ = IdMap.build(pa.array(np.unique(ids.astype(str)).tolist()))
        out[kind] = round(id_map.nbytes / id_map.id_bytes, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    parser.add_argument(
        "--sources", nargs="+", default=["memory", "eventlog"], choices=["memory", "eventlog"]
    )
    parser.add_argument("--child", nargs=2, metavar=("FRACTION", "SOURCE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(float(args.child[0]), args.child[1])))
        return 0

    rows = []
    for source in args.sources:
        for fraction in args.fractions:
            done = subprocess.run(
                [sys.executable, "-m", "loadtest.bench_train", "--child", str(fraction), source],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(_line(rows[-1]), flush=True)
    base = {r["source"]: r for r in rows if r["fraction"] == min(args.fractions)}
    for r in rows:
        b = base[r["source"]]
        r["time_ratio_vs_smallest"] = round(r["train_s"] / b["train_s"], 2)
        r["event_ratio_vs_smallest"] = round(r["events"] / b["events"], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": {"cpus": os.cpu_count()}, "runs": rows}, indent=2) + "\n"
    )
    print(f"\n{_header()}")
    for r in rows:
        print(_line(r))
    print(f"-> {args.out}")
    return 0


def _header() -> str:
    return f"{'source':9} {'frac':>5} {'events':>9} {'train s':>8} {'peak MB':>8}  phases (s)"


def _line(r: dict) -> str:
    phases = " ".join(f"{k}={v:.2f}" for k, v in r["phases_s"].items())
    id_maps = " ".join(f"{k}={v:.2f}" for k, v in r["id_map_bytes_per_id_byte"].items())
    return f"{r['source']:9} {r['fraction']:5.2f} {r['events']:9d} {r['train_s']:8.2f} {r['peak_rss_mb']:8d}  {phases}  id maps (bytes/id byte): {id_maps}"


if __name__ == "__main__":
    raise SystemExit(main())
