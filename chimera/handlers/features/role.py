"""Role s2, the feature generator: the ordered (lease-owned) consumer of ``mkt:events:{perp}:<SYM>``
and ``feat:{commands}``, one symbol's entries in stream order.

Leaf modules: ``market.py`` (klines, book, mark price, funding), ``recompute.py``
(``RecomputeFeatures``: the in-process runtime over a period), ``regime.py`` (the daily regime
timer); ``toolkit.py`` holds what they share and ``state_cache.py`` the engines, saved through
the feature port once per read batch (``end_batch``, before the batch is acked).

No runtime idempotency marks: one Redis key per book tick would cost more than the work. The
engine ignores bars it has folded in, and commands are idempotent upserts.
"""

from __future__ import annotations

from typing import Any

from chimera.handlers.features.market import ignore, on_book, on_funding, on_kline, on_mark
from chimera.handlers.features.recompute import handle_recompute
from chimera.handlers.features.regime import handle_regime
from chimera.handlers.features.state_cache import end_batch
from chimera.schemas.messages import (
    BookTicker,
    DepthLevels,
    FundingEvent,
    Kline,
    MarkPrice,
    RecomputeFeatures,
    TimerFired,
    Trade,
)
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def streams(settings: Any) -> list[str]:
    syms = list(getattr(settings, "symbols", ()) or ())
    return [keys.mkt_stream("perp", s) for s in syms] + [keys.FEAT_COMMANDS]


SPEC = HandlerSpec(
    role="s2",
    routes={
        Kline: Route(on_kline, idem=None),
        BookTicker: Route(on_book, idem=None),
        DepthLevels: Route(on_book, idem=None),
        MarkPrice: Route(on_mark, idem=None),
        FundingEvent: Route(on_funding, idem=None),
        Trade: Route(ignore, idem=None),
        RecomputeFeatures: Route(handle_recompute, idem=None),
        TimerFired: Route(handle_regime, idem=None),
    },
    streams=streams,
    ordered=True,
    end_batch=end_batch,
    description="S2 feature generator: per-symbol features from market events, recompute, daily regime",
)
