"""Notifier role (registry entry ``notifier``): ``Notify`` on ``notify:{outbox}`` (from S11's alerts,
or any producer) and its own retry timers on the same stream."""

from __future__ import annotations

from chimera.handlers.notifier.deliver import lock_scope, on_notify
from chimera.schemas.observability import Notify
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def _streams(_settings) -> list[str]:
    return [keys.NOTIFY_OUTBOX]


# idem=None: the notification document is the de-duplication (a retry timer re-delivers the same
# Notify under a new idempotency key; a done-marker would also hide a redelivery after a lost reply).
SPEC = HandlerSpec(role="notifier", streams=_streams, routes={Notify: Route(on_notify, lock=lock_scope, idem=None)},
                   description="Notifier: Notify -> Telegram / Standard Webhooks, retries with backoff and "
                               "429 retry_after, dead letter after N attempts, notifications collection")
