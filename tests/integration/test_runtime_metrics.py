"""Every worker process serves its own /metrics, /health and /ready (ARCHITECTURE §9)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx

from chimera.handlers.noop import BENCH_STREAM
from chimera.schemas.messages import Noop
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from tests.conftest import subprocess_env
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port


def _done(text: str) -> float:
    """chimera_entries_total{outcome="done",role="noop"} from a Prometheus text page (0 if absent)."""
    m = re.search(r'^chimera_entries_total\{outcome="done",role="noop"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _get(url: str):
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:  # not listening yet
        return None


def test_worker_process_serves_metrics_health_and_ready(r, settings):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "chimera.ops.cli", "worker", "--role", "noop"],
                            env=subprocess_env(settings, CHIMERA_METRICS_PORT=str(port)))
    try:
        first = wait_until(lambda: _get(f"{base}/metrics"), timeout=30, message="/metrics answering")
        assert first.status_code == 200
        assert first.headers["content-type"].startswith("text/plain")
        before = _done(first.text)
        producer = Producer(r, WallClock())
        for i in range(25):
            producer.publish(BENCH_STREAM, Noop(n=i), idempotency_key=f"m{i}")
        wait_until(lambda: _done(httpx.get(f"{base}/metrics", timeout=2).text) >= before + 25, timeout=30,
                   message="the processed-entries counter up by 25")
        page = httpx.get(f"{base}/metrics", timeout=2).text
        assert "chimera_handle_seconds_bucket" in page  # base unit: seconds
        assert not re.search(r'^chimera_\w+\{[^}]*(order|intent|client_order)_id=', page, re.M)
        health = httpx.get(f"{base}/health", timeout=2)
        assert health.status_code == 200 and health.json()["role"] == "noop"
        ready = httpx.get(f"{base}/ready", timeout=2)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert (body["ready"], body["redis"], body["store"]) == (True, "ok", "ok")
        assert httpx.get(f"{base}/nope", timeout=2).status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_bad_metrics_port_is_a_clear_error(settings):
    out = subprocess.run([sys.executable, "-m", "chimera.ops.cli", "worker", "--role", "noop"],
                         env=subprocess_env(settings, CHIMERA_METRICS_PORT="70000"), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "CHIMERA_METRICS_PORT='70000' must be between 0 (any free port) and 65535" in out.stderr
