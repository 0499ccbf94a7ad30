"""Payloads of the notifier, as frozen tagged msgspec Structs.

``Alert`` and ``MetricEvent`` (what every service emits) live in ``messages.py``; these are the
message S11 (and any service) sends the notifier. Evolution rules: see ``envelope.py``.
"""

from __future__ import annotations

from chimera.schemas.envelope import Message, register


class Notify(Message, frozen=True, tag="notify"):
    """One message to one channel. ``event_id`` + ``channel`` is the idempotency key: a replay or a
    second producer of the same event never sends twice (except a send whose reply was lost)."""

    event_id: str
    channel: str  # a channel name from the notifier config (its kind: telegram | webhook)
    text: str
    level: str = "INFO"
    data: dict[str, str] = {}


register(Notify)
