"""The README's main job, `crossrec demo`, end to end in a subprocess: its own stack (broker and
services in a temporary CROSSREC_HOME) on a Redis database of its own, the real Online Retail
data, training, recommendations, then serving until Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import redis
from support import start_crossrec

from crossrec import settings as config

DEMO_DB = 13  # a database no other test uses: the demo's app is always named `retail`
ANSWER = re.compile(r"^(\{.*?\})\s+-> (.*)$")


def test_the_demo_imports_trains_recommends_and_keeps_serving(
    stack: config.Settings, tmp_path: Path
) -> None:
    redis_url = re.sub(r"/\d+$", "", stack.redis_url) + f"/{DEMO_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    demo, env = start_crossrec(
        "demo",
        home=tmp_path,
        owner_pid=os.getpid(),  # the stack goes if this test dies
        REDIS_URL=redis_url,
        COLUMNS="200",  # one line per printed answer
    )
    watchdog = threading.Timer(300, demo.kill)  # a hung demo fails the test, not the suite
    watchdog.start()
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line.rstrip())
            if line.startswith("Ctrl-C stops it."):
                break
        output = "\n".join(lines)
        assert lines and lines[-1] == "Ctrl-C stops it.", output
        assert re.search(r"[\d,]+ events produced, ingested and logged", output), output
        answers = {m[1]: m[2] for m in map(ANSWER.match, lines) if m}
        assert len(answers) == 6, output  # three users, two items, an empty query
        for query, items in answers.items():
            scores = [float(s) for s in re.findall(r"\(([\d.]+)\)", items)]
            assert len(scores) == 5, (query, items)  # the engine.json's num
            if query == "{}":
                assert set(scores) == {0.0}  # popularity backfill only
            else:
                assert scores[0] > 0 and scores == sorted(scores, reverse=True), (query, items)

        # ... and the stack it leaves serving answers the command the demo prints
        query = '{"user": "13748", "num": 3}'
        asked = subprocess.run(
            [sys.executable, "-m", "crossrec.cli.main", "query", "--app", "retail", query],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert asked.returncode == 0, asked.stderr
        assert len(orjson.loads(asked.stdout)["itemScores"]) == 3

        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        redis.Redis.from_url(redis_url).flushdb()
