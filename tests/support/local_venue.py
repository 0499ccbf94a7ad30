"""The local venue for one test: started with a ``VenueConfig``, stopped when the block ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import RunningVenue, start_venue


@contextlib.contextmanager
def running_venue(tmp_path: Path | None = None, **cfg) -> Iterator[RunningVenue]:
    """``VenueConfig(**cfg)`` (the repo's sample replay unless ``data`` says otherwise), with its state
    file in ``tmp_path`` when given."""
    if tmp_path is not None:
        cfg.setdefault("state_file", str(tmp_path / "venue.json"))
    v = start_venue(VenueConfig(**cfg))
    try:
        yield v
    finally:
        v.stop()
