"""``chimera up --data SPEC... --from --to --speed N|max``: the demo on the user's own data, in event time.

Bad input is refused before anything starts (exit 2, the option named, nothing written in the data
directory). A real run replays exactly the chosen period paced by the pipeline: the venue's clock is
published for the workers (``CHIMERA_CLOCK=follow``), no step had to be let go (``pace.timeouts``
0), and S2 stored one signal per replayed bar of each symbol.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from chimera.venues.local.replay.feed import SAMPLE_DIR
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port

BTC = f"ft_klines:futures:BTCUSDT:{SAMPLE_DIR / 'BTC_USDT_USDT-1m-futures.feather'}"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    env.update(CHIMERA_LOG_JSON="1", CHIMERA_LOG_LEVEL="INFO")
    return env


def _up(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chimera.ops.cli", "up", "--data-dir", str(tmp_path / "d"), *args],
                          env=_env(), capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.parametrize(("args", "says"), [
    (("--data", "sample", "--speed", "fast"), "--speed 'fast'"),
    (("--data", "sample", "--speed", "-3"), "--speed '-3'"),
    (("--from", "2025-07-06"), "--from/--to select a period of --data"),
    (("--data", "prices.txt"), "--data 'prices.txt': cannot tell what this file holds"),
    (("--data", "vision_klines:futures:BTCUSDT:nosuch.zip"), "nosuch.zip does not exist"),
    (("--data", "sample", "--from", "2025-07-08", "--to", "2025-07-07"), "--from 2025-07-08 is after --to 2025-07-07"),
    (("--data", "sample", "--from", "2030-01-01"), "no bars between --from 2030-01-01"),
])
def test_bad_input_is_refused_before_anything_starts(tmp_path, args, says):
    res = _up(tmp_path, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert says in res.stderr, res.stderr
    assert not (tmp_path / "d").exists(), "something was written for a refused run"


def test_a_data_dir_of_another_replay_is_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "replay.json").write_text(json.dumps({"data": ["other"]}))
    res = _up(tmp_path, "--data", BTC, "--from", "2025-07-06T00:00", "--to", "2025-07-06T00:30")
    assert res.returncode == 2 and "holds a replay of other data" in res.stderr, res.stderr
    assert sorted(p.name for p in d.iterdir()) == ["replay.json"]


def _clock(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/chimera/v1/clock", timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


@pytest.mark.timeout(600)
def test_up_replays_the_chosen_period_of_the_users_data_paced_by_the_pipeline(tmp_path):
    venue, api, redis_port = free_port(), free_port(), free_port()
    start, minutes = 1751760000000, 20  # 2025-07-06T00:00Z + 20 one-minute bars of BTCUSDT
    up = subprocess.Popen([sys.executable, "-m", "chimera.ops.cli", "up", "--data-dir", str(tmp_path / "d"),
                           "--venue-port", str(venue), "--api-port", str(api), "--redis-port", str(redis_port),
                           "--data", BTC, "--from", "2025-07-06T00:00", "--to", "2025-07-06T00:20", "--speed", "max"],
                          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        clock = wait_until(lambda: (c := _clock(venue)) and c["done"] and c, timeout=400, interval=0.5,
                           message="the venue replayed the period")
        assert clock["time_ms"] == start + minutes * 60_000 - 1 and clock["total"] == minutes * 4, clock
        assert clock["pace"]["steps"] >= minutes and clock["pace"]["timeouts"] == 0, clock
        import redis

        r = redis.Redis(port=redis_port)
        published = json.loads(r.get("replay:{clock}"))  # what the workers' clocks follow
        assert published["paced"] is True and published["time_ms"] == clock["time_ms"], published
        from chimera.store import open_store

        store = open_store(f"sqlite:///{(tmp_path / 'd').resolve()}/chimera.sqlite")
        signals = wait_until(lambda: (n := store.count("signals", {"symbol": "BTCUSDT"})) >= minutes and n,
                             timeout=60, message="S2 stored a signal per bar")
        assert signals == minutes
        assert store.count("signals", {"symbol": "ETHUSDT"}) == 0  # only the user's data is replayed
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
