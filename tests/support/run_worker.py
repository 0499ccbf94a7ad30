"""Run a test handler spec as a real worker process: python -m tests.support.run_worker SPEC CONSUMER."""

from __future__ import annotations

import importlib
import sys

from chimera.ops.bootstrap import redis_from, setup_logging, stores_from
from chimera.ops.settings import load_settings
from chimera.workers.clock import WallClock
from chimera.workers.runtime import Worker


def main() -> None:
    spec_path, consumer = sys.argv[1], sys.argv[2]
    module, _, attr = spec_path.partition(":")
    spec = getattr(importlib.import_module(module), attr)
    settings = load_settings()
    setup_logging(settings.log_level, json=False)
    store, objects = stores_from(settings)
    worker = Worker(spec, redis_from(settings), settings=settings, store=store, objects=objects,
                    clock=WallClock(), consumer=consumer)
    worker.install_signal_handlers()
    worker.run()


if __name__ == "__main__":
    main()
