"""The operator CLI, run as a subprocess against real Redis."""

from __future__ import annotations

import json
import subprocess
import sys

from chimera.schemas.messages import Noop
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from tests.conftest import subprocess_env


def cli(settings, *args, **env):
    return subprocess.run([sys.executable, "-m", "chimera.ops.cli", *args], env=subprocess_env(settings, **env),
                          capture_output=True, text=True, timeout=180)  # a loaded CI box starts Python slowly


def test_replay_print_and_streams_info(r, settings):
    p = Producer(r, WallClock())
    ids = [p.publish("ord:{commands}", Noop(n=i), idempotency_key=f"c{i}") for i in range(4)]
    out = cli(settings, "replay", "--stream", "ord:{commands}", "--from-id", ids[0], "--print")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [row["idempotency_key"] for row in rows] == ["c1", "c2", "c3"]
    assert rows[0]["payload"]["n"] == 1 and rows[0]["account_id"] == "main"
    info = cli(settings, "streams", "info")
    assert info.returncode == 0 and "ord:{commands}\t4" in info.stdout


def test_clear_errors(r, settings):
    out = cli(settings, "replay", "--stream", "nope", "--from-id", "0", "--into-group", "cg:x")
    assert out.returncode == 2 and "does not exist" in out.stderr
    out = cli(settings, "replay", "--stream", "nope", "--from-id", "0")
    assert out.returncode == 2 and "exactly one of" in out.stderr
    out = cli(settings, "worker", "--role", "s99")
    assert out.returncode == 2 and "unknown role" in out.stderr
    out = cli(settings, "streams", "info", CHIMERA_VENUE="moon")
    assert out.returncode == 2 and "CHIMERA_VENUE" in out.stderr
    out = cli(settings, "streams", "dlq", "requeue", "1-1")
    assert out.returncode == 2 and "no dead letter" in out.stderr
