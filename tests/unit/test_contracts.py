"""The contracts in schemas/ are the source of truth: code must agree with them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from crossrec.adapters.kafka import TOPICS
from crossrec.rpc import recommender_pb2

REPO = Path(__file__).resolve().parents[2]


def test_topic_list_matches_schemas() -> None:
    declared = json.loads((REPO / "schemas" / "topics.json").read_text())["topics"]
    assert [(t["name"], t["partitions"]) for t in declared] == [
        (t.name, t.partitions) for t in TOPICS
    ]


def test_generated_protobuf_code_is_current(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO / 'schemas'}", f"--python_out={tmp_path}",
         str(REPO / "schemas" / "recommender.proto")],
        check=True,
    )  # fmt: skip
    fresh = (tmp_path / "recommender_pb2.py").read_text()
    assert fresh == Path(recommender_pb2.__file__).read_text(), "run scripts/gen-proto"


def test_the_proto_carries_the_whole_ur_query() -> None:
    fields = {f.name for f in recommender_pb2.RecommendRequest.DESCRIPTOR.fields}
    ur_query = {"user", "user_bias", "item", "item_bias", "item_set", "item_set_bias", "fields",
                "date_range", "current_date", "blacklist_items", "return_self", "num", "from",
                "event_names"}  # fmt: skip
    assert ur_query <= fields
    response = {f.name for f in recommender_pb2.RecommendResponse.DESCRIPTOR.fields}
    assert {"item_scores", "model_version", "backfill"} <= response
