"""The event log: append-only Parquet segments per app, on any pyarrow filesystem.

Layout: `<root>/<app>/p<partition>-<first offset>-<last offset>.parquet`. A segment holds the valid
events of one app taken from one run of offsets of one topic partition. Ingest commits a Kafka
offset only after the segment that covers it is in place (written to a temporary name, then
renamed), and on start it skips offsets that an app's segments already cover: a worker killed at any
instant neither loses nor duplicates an event. `file:///path`, a plain path or `s3://bucket/prefix`
all work; the location is configuration.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from crossrec.core.events import Event

SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("entity_type", pa.string(), nullable=False),
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("target_entity_type", pa.string()),
        pa.field("target_entity_id", pa.string()),
        pa.field("properties", pa.string()),  # JSON object text, null when empty
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("pr_id", pa.string()),
        pa.field("creation_time", pa.timestamp("ms", tz="UTC")),
        # where the event came from: with the segment name this makes the log exactly-once
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),  # position inside a batched message
    ]
)

_SEGMENT = re.compile(r"^p(\d+)-(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True, slots=True)
class Segment:
    app: str
    partition: int
    first_offset: int
    last_offset: int
    path: str

    @staticmethod
    def name(partition: int, first: int, last: int) -> str:
        return f"p{partition:04d}-{first:020d}-{last:020d}.parquet"


@dataclass(slots=True)
class LoggedEvent:
    """A valid event with its Kafka coordinates, ready to append."""

    event: Event
    properties_json: str | None
    partition: int
    offset: int
    index: int


def open_filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in url:
        return pafs.LocalFileSystem(), url.rstrip("/")
    fs, path = pafs.FileSystem.from_uri(url)
    return fs, path.rstrip("/")


class EventLog:
    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = open_filesystem(url)
        self.fs.create_dir(self.root, recursive=True)

    def app_dir(self, app: str) -> str:
        return f"{self.root}/{app}"

    def segments(self, app: str) -> list[Segment]:
        selector = pafs.FileSelector(self.app_dir(app), allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            match = _SEGMENT.match(info.base_name)
            if match:
                partition, first, last = map(int, match.groups())
                found.append(Segment(app, partition, first, last, info.path))
        return sorted(found, key=lambda s: (s.partition, s.first_offset))

    def apps(self) -> list[str]:
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        return sorted(
            i.base_name
            for i in self.fs.get_file_info(selector)
            if i.type == pafs.FileType.Directory
        )

    def high_watermarks(self, app: str) -> dict[int, int]:
        """Per partition, the last offset this app's segments cover."""
        marks: dict[int, int] = {}
        for seg in self.segments(app):
            marks[seg.partition] = max(marks.get(seg.partition, -1), seg.last_offset)
        return marks

    def append(
        self,
        app: str,
        partition: int,
        first: int,
        last: int,
        events: Sequence[LoggedEvent] | pa.Table,
    ) -> Segment:
        """Write one segment atomically: a temporary file, then a rename. `events` are logged
        events or rows already in SCHEMA."""
        directory = self.app_dir(app)
        self.fs.create_dir(directory, recursive=True)
        final = f"{directory}/{Segment.name(partition, first, last)}"
        temporary = f"{directory}/.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(temporary) as sink:
            rows = events if isinstance(events, pa.Table) else to_table(events)
            pq.write_table(rows, sink, compression="zstd")
        self.fs.move(temporary, final)
        return Segment(app, partition, first, last, final)

    def read(
        self, app: str, columns: Sequence[str] | None = None, filter: ds.Expression | None = None
    ) -> pa.Table:
        """Every event of the app as one table (empty with the schema when there are none)."""
        paths = [s.path for s in self.segments(app)]
        if not paths:
            table = SCHEMA.empty_table()
            return table.select(list(columns)) if columns else table
        dataset = ds.dataset(paths, schema=SCHEMA, format="parquet", filesystem=self.fs)
        return dataset.to_table(columns=list(columns) if columns else None, filter=filter)

    def iter_batches(self, app: str, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        paths = [s.path for s in self.segments(app)]
        if not paths:
            return
        dataset = ds.dataset(paths, schema=SCHEMA, format="parquet", filesystem=self.fs)
        yield from dataset.to_batches(batch_size=batch_size)

    def delete_app(self, app: str) -> None:
        directory = self.app_dir(app)
        if self.fs.get_file_info(directory).type != pafs.FileType.NotFound:
            self.fs.delete_dir(directory)


def to_table(events: Sequence[LoggedEvent]) -> pa.Table:
    columns = {
        "event_id": [e.event.event_id for e in events],
        "event": [e.event.event for e in events],
        "entity_type": [e.event.entity_type for e in events],
        "entity_id": [e.event.entity_id for e in events],
        "target_entity_type": [e.event.target_entity_type for e in events],
        "target_entity_id": [e.event.target_entity_id for e in events],
        "properties": [e.properties_json for e in events],
        "event_time": [e.event.event_time for e in events],
        "tags": [e.event.tags or None for e in events],
        "pr_id": [e.event.pr_id for e in events],
        "creation_time": [e.event.creation_time for e in events],
        "partition": [e.partition for e in events],
        "offset": [e.offset for e in events],
        "index": [e.index for e in events],
    }
    return pa.Table.from_pydict(columns, schema=SCHEMA)
