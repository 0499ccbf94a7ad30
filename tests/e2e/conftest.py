"""The full chaos drill (300 intents) runs only when asked for: ``pytest -m drill_full tests/e2e``."""

from __future__ import annotations

import pytest


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "drill_full: the operator-size chaos drill; run with -m drill_full")


def pytest_collection_modifyitems(config, items) -> None:
    if "drill_full" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="operator-size drill: run it with `pytest -m drill_full tests/e2e` "
                                   "or `chimera drill --intents 300 --kill-every-ms 300`")
    for item in items:
        if "drill_full" in item.keywords:
            item.add_marker(skip)
