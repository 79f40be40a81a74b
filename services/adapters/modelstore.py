"""Model versions on any pyarrow filesystem: immutable directories and a live pointer per app.

Layout under the store's root (a local path, `file://` or `s3://` URL):

    <app>/<version>/manifest.json, documents.arrow, ...   one immutable version
    <app>/.tmp-<version>-<hex>/                            a version being written
    <app>/LIVE                                             {"version", "since", "previous", "retired_at"}

`publish` writes a version under a temporary name (manifest last), renames it into place, then
replaces LIVE (written aside, then renamed over it). Readers follow LIVE. `prune` keeps the live
version, the previous one until `grace_seconds` after it was replaced (servers still loading it
finish), versions published less than `grace_seconds` ago, and deletes the rest, so the store
holds a bounded number of versions however often the app trains.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pyarrow.fs as pafs

from crossrec.adapters.eventlog import open_filesystem
from crossrec.core.events import format_time
from crossrec.core.model import Model, read_manifest

LIVE = "LIVE"


def _wall_clock() -> int:
    return int(time.time() * 1000)


class ModelStore:
    def __init__(self, url: str, clock: Callable[[], int] | None = None) -> None:
        self.url = url
        self.fs, self.root = open_filesystem(url)
        self.fs.create_dir(self.root, recursive=True)
        self.clock = clock or _wall_clock

    def _app(self, app: str) -> str:
        return f"{self.root}/{app}"

    def path(self, app: str, version: str) -> str:
        return f"{self._app(app)}/{version}"

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    # -- writing -----------------------------------------------------------------------------

    def publish(
        self,
        model: Model,
        *,
        extra: Mapping[str, Any] | None = None,
        make_live: bool = True,
        also: Callable[[pafs.FileSystem, str], object] | None = None,
    ) -> dict:
        """Write the model as a new version (and make it live); return its manifest.
        `also(fs, directory)` writes more files into the version (item clusters) before it
        is renamed into place, so a published version never lacks them."""
        final = self.path(model.app, model.version)
        if self._exists(final):
            raise FileExistsError(f"model version {model.app}/{model.version} already exists")
        temporary = f"{self._app(model.app)}/.tmp-{model.version}-{uuid.uuid4().hex[:8]}"
        published = self.clock()
        extra = {**(extra or {}), "published_at": published, "published": format_time(published)}
        manifest = model.save(self.fs, temporary, extra=extra)
        if also is not None:
            also(self.fs, temporary)
        self.fs.move(temporary, final)
        if make_live:
            self.set_live(model.app, model.version)
        return manifest

    def _pointer(self, app: str) -> dict[str, Any]:
        try:
            with self.fs.open_input_stream(f"{self._app(app)}/{LIVE}") as source:
                return orjson.loads(source.read())
        except FileNotFoundError:
            return {}

    def set_live(self, app: str, version: str) -> None:
        """Point LIVE at a published version (also a rollback), atomically."""
        if not self._exists(f"{self.path(app, version)}/manifest.json"):
            raise FileNotFoundError(f"no published model version {app}/{version}")
        old = self._pointer(app)
        now = self.clock()
        pointer = {"version": version, "since": now}
        if old.get("version") and old["version"] != version:
            pointer.update(previous=old["version"], retired_at=now)
        elif old.get("previous"):
            pointer.update(previous=old["previous"], retired_at=old["retired_at"])
        temporary = f"{self._app(app)}/.tmp-live-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(temporary) as sink:
            sink.write(orjson.dumps(pointer))
        self.fs.move(temporary, f"{self._app(app)}/{LIVE}")

    # -- reading -----------------------------------------------------------------------------

    def live(self, app: str) -> str | None:
        return self._pointer(app).get("version")

    def manifest(self, app: str, version: str) -> dict[str, Any]:
        return read_manifest(self.fs, self.path(app, version))

    def load(self, app: str, version: str | None = None, verify: bool = True) -> Model:
        version = version or self.live(app)
        if version is None:
            raise FileNotFoundError(f"app {app!r} has no live model")
        return Model.load(self.fs, self.path(app, version), verify=verify)

    def _entries(self, app: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self._app(app), allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.Directory]

    def versions(self, app: str) -> list[str]:
        """Complete versions (with a manifest), oldest first."""
        found = []
        for info in self._entries(app):
            if info.base_name.startswith("."):
                continue
            try:
                manifest = self.manifest(app, info.base_name)
            except FileNotFoundError:
                continue
            found.append((manifest.get("published_at", 0), info.base_name))
        return [v for _, v in sorted(found)]

    def prune(self, app: str, grace_seconds: float, now: int | None = None) -> list[str]:
        """Delete versions nobody should still need; return the deleted version ids."""
        now = self.clock() if now is None else now
        grace = grace_seconds * 1000
        pointer = self._pointer(app)
        keep = {pointer.get("version")}
        if pointer.get("previous") and now - pointer.get("retired_at", 0) < grace:
            keep.add(pointer["previous"])
        live_published = (
            self._published(app, pointer["version"]) if pointer.get("version") else None
        )
        deleted = []
        for info in self._entries(app):
            name = info.base_name
            if name.startswith(".tmp-"):
                written = info.mtime.timestamp() * 1000 if info.mtime else now
                if now - written >= grace:
                    self.fs.delete_dir(info.path)
                continue
            if name in keep:
                continue
            published = self._published(app, name)
            newer_than_live = (
                live_published is None or published is None or published > live_published
            )
            if newer_than_live and published is not None and now - published < grace:
                continue  # just published, about to go live
            self.fs.delete_dir(info.path)
            deleted.append(name)
        return sorted(deleted)

    def _published(self, app: str, version: str) -> int | None:
        try:
            return int(self.manifest(app, version).get("published_at", 0))
        except FileNotFoundError:
            return None
