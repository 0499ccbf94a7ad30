"""Debian's Prometheus scrapes a running S11 worker: the health gauge and the ChimeraHealthRed alert
(from the repo's rule file) are queryable through Prometheus' HTTP API.

The worker is ``chimera-worker --role s11`` on real Redis, serving /metrics, /health and /ready on
``CHIMERA_METRICS_PORT`` (the runtime's per-worker server, chimera/ops/serve.py). In a tree without
that server, ``serve_worker`` runs the same role under prometheus_client's own HTTP server instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.redis import connect
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.scheduler_role import run_scheduler
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus is not installed (apt-get install prometheus)")


RUNTIME_SERVER = importlib.util.find_spec("chimera.ops.serve") is not None


def serve_worker(port: int) -> None:
    """Fallback without the runtime's server: the s11 role with prometheus_client's HTTP server."""
    from prometheus_client import start_http_server

    from chimera.handlers.health.role import SPEC
    from chimera.ops.bootstrap import redis_from, stores_from
    from chimera.ops.settings import load_settings
    from chimera.workers.runtime import Worker

    settings = load_settings()
    start_http_server(port, addr="127.0.0.1")
    store, objects = stores_from(settings)
    worker = Worker(SPEC, redis_from(settings), settings=settings, store=store, objects=objects, clock=WallClock(),
                    consumer="s11-prom")
    worker.install_signal_handlers()
    worker.run()


def _ready(url: str) -> dict | None:
    try:
        return _get(url)
    except OSError:
        return None


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_prometheus_scrapes_health_gauge_and_fires_the_red_alert(redis_server, tmp_path):
    settings_env = {"CHIMERA_REDIS_URL": redis_server.url, "CHIMERA_STORE_URL": f"sqlite:///{tmp_path}/store.sqlite",
                    "CHIMERA_OBJECTS_URL": f"file://{tmp_path}/objects"}
    r = connect(redis_server.url)
    r.flushall()
    store = open_store(settings_env["CHIMERA_STORE_URL"])
    activate(store, "prom-test", 1, {"health": {"interval_ms": 300, "ttl_ms": 3000}})
    # What S4 writes when makers rarely fill: fill ratio 0.1 -> RED.
    r.hset(keys.ROUTER_COUNTERS, mapping={"maker_sent_count": 50, "maker_filled_count": 5})
    worker_port, prom_port = free_port(), free_port()
    env = dict(os.environ, **settings_env, CHIMERA_LOG_JSON="0", CHIMERA_LOG_LEVEL="WARNING")
    env.pop("CHIMERA_CLUSTER", None)
    env["CHIMERA_METRICS_PORT"] = str(worker_port)
    cmd = [str(Path(sys.executable).parent / "chimera-worker"), "--role", "s11"] if RUNTIME_SERVER else \
        [sys.executable, "-c", f"from tests.e2e.test_prometheus_scrape import serve_worker; serve_worker({worker_port})"]
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "chimera-rules.yaml")],
        "scrape_configs": [{"job_name": "chimera-s11", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}],
    }))
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "prometheus.log", "w"))  # noqa: SIM115
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-prom", stop), daemon=True)
    sched.start()
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(q: str) -> list:
        try:
            return _get(f"{api}/query?query={urllib.parse.quote(q)}")["data"]["result"]
        except OSError:
            return []

    def red_alert() -> list:
        try:
            alerts = _get(f"{api}/alerts")["data"]["alerts"]
        except OSError:
            return []
        return [a for a in alerts if a["labels"]["alertname"] == "ChimeraHealthRed" and a["state"] == "firing"]

    try:
        if RUNTIME_SERVER:
            ready = wait_until(lambda: _ready(f"http://127.0.0.1:{worker_port}/ready"), 60, 0.25, "the worker ready")
            assert ready["redis"] == "ok"
        up = wait_until(lambda: query('up{job="chimera-s11"} == 1'), 60, 0.25, "the worker target up")
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{worker_port}"
        level = wait_until(lambda: [s for s in query("chimera_health_level") if s["value"][1] == "3"], 60, 0.25,
                           "chimera_health_level == 3 (RED) in Prometheus")
        assert level[0]["metric"]["job"] == "chimera-s11"
        # The same grade is what S11 wrote for S3/S6 to read.
        assert (r.get(keys.HEALTH_STATE) or b"").decode().upper().find("RED") >= 0
        alert = wait_until(red_alert, 60, 0.25, "ChimeraHealthRed firing")
        assert alert[0]["labels"]["severity"] == "critical"
        signal = query('chimera_health_signal{signal="maker_fill_ratio"}')
        assert signal and float(signal[0]["value"][1]) == pytest.approx(0.1)
    finally:
        stop.set()
        sched.join(5)
        for p in (worker, prom):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        r.close()
