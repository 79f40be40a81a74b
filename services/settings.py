"""Where everything is: one Settings object from the environment and the running stack's file.

`crossrec up` writes `$CROSSREC_HOME/stack.json` with the broker and Redis it started; every other
command reads it, and an environment variable overrides any value.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import orjson


def home() -> Path:
    return Path(os.environ.get("CROSSREC_HOME", ".crossrec")).resolve()


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    eventlog_url: str = ""  # default: $CROSSREC_HOME/eventlog
    modelstore_url: str = ""  # default: $CROSSREC_HOME/models
    topic_prefix: str = "crossrec."
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 7070
    history_cap: int = 500  # newest events kept per user and event name
    history_cache_users: int = 10_000  # users' histories a query service keeps; 0 = none
    max_event_bytes: int = 64 * 1024
    max_batch_events: int = 50  # PredictionIO's /batch/events.json limit
    log_flush_seconds: float = 2.0  # the event log is written (and offsets committed) this often
    log_flush_events: int = 200_000
    train_debounce_seconds: float = (
        30.0  # a train starts once item changes have been quiet this long
    )
    train_max_wait_seconds: float = 300.0  # ... or when the first pending change is this old
    train_every_seconds: float = 0.0  # a scheduled train of every app; 0 = off
    model_grace_seconds: float = 300.0  # the previous model version is kept this long
    query_processes: int = 1  # query-service processes `crossrec up` runs (one consumer group)
    shards: int = 0  # K clusters per model when engine.json's shards names none; 0 = unsharded
    # request/reply over Kafka (crossrec.rpc): see the README's "RPC on the broker"
    rpc_linger_ms: int = 5  # requests wait this long to share a produce batch (and partition)
    rpc_fetch_wait_ms: int = 50  # fetch_max_wait_ms of request and reply consumers
    rpc_reply_topic_seconds: float = 10.0  # a client moves to a fresh reply topic this often
    rpc_request_topic_seconds: float = 60.0  # request topics are replaced this often; 0 = never

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def eventlog(self) -> str:
        return self.eventlog_url or str(home() / "eventlog")

    @property
    def modelstore(self) -> str:
        return self.modelstore_url or str(home() / "models")


_ENV = {
    "kafka_bootstrap": "CROSSREC_KAFKA_BOOTSTRAP",
    "redis_url": "REDIS_URL",
    "eventlog_url": "CROSSREC_EVENTLOG_URL",
    "modelstore_url": "CROSSREC_MODELSTORE_URL",
    "topic_prefix": "CROSSREC_TOPIC_PREFIX",
    "gateway_host": "CROSSREC_GATEWAY_HOST",
    "gateway_port": "CROSSREC_GATEWAY_PORT",
    "history_cap": "CROSSREC_HISTORY_CAP",
    "history_cache_users": "CROSSREC_HISTORY_CACHE_USERS",
    "max_event_bytes": "CROSSREC_MAX_EVENT_BYTES",
    "max_batch_events": "CROSSREC_MAX_BATCH_EVENTS",
    "log_flush_seconds": "CROSSREC_LOG_FLUSH_SECONDS",
    "log_flush_events": "CROSSREC_LOG_FLUSH_EVENTS",
    "train_debounce_seconds": "CROSSREC_TRAIN_DEBOUNCE_SECONDS",
    "train_max_wait_seconds": "CROSSREC_TRAIN_MAX_WAIT_SECONDS",
    "train_every_seconds": "CROSSREC_TRAIN_EVERY_SECONDS",
    "model_grace_seconds": "CROSSREC_MODEL_GRACE_SECONDS",
    "query_processes": "CROSSREC_QUERY_PROCESSES",
    "shards": "CROSSREC_SHARDS",
    "rpc_linger_ms": "CROSSREC_RPC_LINGER_MS",
    "rpc_fetch_wait_ms": "CROSSREC_RPC_FETCH_WAIT_MS",
    "rpc_reply_topic_seconds": "CROSSREC_RPC_REPLY_TOPIC_SECONDS",
    "rpc_request_topic_seconds": "CROSSREC_RPC_REQUEST_TOPIC_SECONDS",
}


def stack_file() -> Path:
    return home() / "stack.json"


def load() -> Settings:
    """Defaults, then the running stack's file, then the environment."""
    values: dict[str, object] = {}
    if stack_file().exists():
        values.update(orjson.loads(stack_file().read_bytes()).get("settings", {}))
    settings = Settings(**{k: v for k, v in values.items() if k in Settings.__slots__})
    overrides: dict[str, object] = {}
    for field_name, variable in _ENV.items():
        raw = os.environ.get(variable)
        if raw is not None:
            kind = type(getattr(settings, field_name))
            overrides[field_name] = kind(raw)
    return replace(settings, **overrides)


def as_dict(settings: Settings) -> dict[str, object]:
    return asdict(settings)
