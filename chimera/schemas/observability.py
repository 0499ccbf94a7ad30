"""Payloads of S11 (health, alerts) and the notifier, as frozen tagged msgspec Structs.

``Alert`` and ``MetricEvent`` (what every service emits) live in ``messages.py``; these are the
messages only S11 and the notifier produce or consume. Evolution rules: see ``envelope.py``.
"""

from __future__ import annotations

from typing import Literal

from chimera.schemas.envelope import Message, register

Grade = Literal["GREEN", "YELLOW", "ORANGE", "RED"]
Channel = Literal["telegram", "webhook"]


class HealthGraded(Message, frozen=True, tag="health_graded"):
    """S11's verdict, published on ``ops:events``-style audit (``metrics:events:s11.health``)."""

    level: Grade
    previous: str = ""  # the level before, "" on the first grade, "STALE" after an expiry
    reasons: dict[str, str] = {}  # signal -> "value vs threshold (level)" for every non-GREEN signal
    ts: int = 0


class Notify(Message, frozen=True, tag="notify"):
    """One message to one channel. ``event_id`` + ``channel`` is the idempotency key: a replay or a
    second producer of the same event never sends twice (except a send whose reply was lost)."""

    event_id: str
    channel: str  # a channel name from the notifier config (its kind: telegram | webhook)
    text: str
    level: str = "INFO"
    data: dict[str, str] = {}


register(HealthGraded, Notify)
