"""Replay of real market data into the engine, with a followable clock."""

from .clock import ReplayClock
from .feed import DataSpec, Feed, build_feed

__all__ = ["DataSpec", "Feed", "ReplayClock", "build_feed"]
