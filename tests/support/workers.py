"""Real workers for tests: in a thread of the test process, or as a process to SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import threading

from chimera.store import open_store
from chimera.workers.clock import WallClock
from chimera.workers.runtime import Worker
from tests.conftest import subprocess_env


class ThreadWorker:
    """``with ThreadWorker(spec, r, settings, "name") as worker:`` runs the real runtime in a thread."""

    def __init__(self, spec, r, settings, consumer, store=None, clock=None):
        self.store = store or open_store(settings.store_url)
        self.worker = Worker(spec, r, settings=settings, store=self.store, clock=clock or WallClock(), consumer=consumer)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.worker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "worker did not stop after stop()"


def spawn(spec: str, consumer: str, settings, **env_extra) -> subprocess.Popen:
    """``spec`` ("module:attr") as a worker process (``tests.support.run_worker``) with the test's settings."""
    return subprocess.Popen([sys.executable, "-m", "tests.support.run_worker", spec, consumer],
                            env=subprocess_env(settings, **env_extra))
