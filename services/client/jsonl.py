"""PredictionIO JSON-lines (the `pio export` format): import into crossrec, export from the log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.compute as pc

from crossrec.adapters.eventlog import EventLog
from crossrec.client.producer import EventProducer, with_event_id
from crossrec.core.events import InvalidEvent, validate
from crossrec.ingest.replay import events_of


@dataclass
class ImportReport:
    accepted: int = 0
    rejected: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


async def import_file(
    producer: EventProducer,
    app: str,
    path: Path,
    progress: Callable[[int], None] = lambda n: None,
    max_problems: int = 1000,
) -> ImportReport:
    """Produce every valid line; report each bad one with its line number and go on."""
    report = ImportReport()
    max_bytes = producer.settings.max_event_bytes
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            progress(len(line))
            line = line.strip()
            if not line:
                continue
            try:
                if len(line) > max_bytes:
                    raise InvalidEvent(f"event is {len(line)} bytes, over the limit of {max_bytes}")
                doc = orjson.loads(line)
                event = validate(doc)
            except (orjson.JSONDecodeError, InvalidEvent) as exc:
                report.rejected += 1
                if len(report.problems) < max_problems:
                    report.problems.append(
                        (
                            number,
                            str(exc) if isinstance(exc, InvalidEvent) else f"malformed JSON: {exc}",
                        )
                    )
                continue
            if event.event_id is None:
                doc, _ = with_event_id(doc)
                line = orjson.dumps(doc)
            producer.send_raw_nowait(app, line, event.entity_id)
            report.accepted += 1
            if report.accepted % 100_000 == 0:
                await producer.flush()
    await producer.flush()
    return report


def export_file(event_log: EventLog, app: str, path: Path) -> int:
    """Write the app's events as JSON-lines, oldest first (ties in log order)."""
    table = event_log.read(app)
    order = pc.sort_indices(
        table,
        sort_keys=[
            ("event_time", "ascending"),
            ("partition", "ascending"),
            ("offset", "ascending"),
            ("index", "ascending"),
        ],
    )
    table = table.take(order)
    count = 0
    with path.open("wb") as out:
        for batch in table.to_batches(max_chunksize=50_000):
            for event in events_of(batch):
                out.write(orjson.dumps(event.to_pio()))
                out.write(b"\n")
                count += 1
    return count
