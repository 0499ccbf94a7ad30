"""S8 role: trade autopsy (registry entry ``s8``).

Route table: ``PositionChanged`` on ``pos:events`` (EXIT; STAGNATED once S6 emits it) →
``generate.on_position_event``; ``RequestAutopsy`` and S8's redo ``TimerFired`` on ``autopsy:{commands}``.
One autopsy per trade at a time (lock); no done-marker: a rewrite of the same inputs writes the same bytes.
"""

from __future__ import annotations

from chimera.handlers.autopsy import generate
from chimera.schemas.messages import PositionChanged, RequestAutopsy, TimerFired
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec, Route


def _lock(env) -> str:
    p = env.payload
    trade = p.pos_id if isinstance(p, PositionChanged) else p.trade_id if isinstance(p, RequestAutopsy) else p.ref
    return f"s8:autopsy:{trade}"


ROUTES = {
    PositionChanged: Route(generate.on_position_event, lock=_lock, idem=None),
    RequestAutopsy: Route(generate.on_request, lock=_lock, idem=None),
    TimerFired: Route(generate.on_timer, lock=_lock, idem=None),
}

SPEC = HandlerSpec(role="s8", streams=lambda _s: [keys.POS_EVENTS, keys.AUTOPSY_COMMANDS], routes=ROUTES,
                   description="S8 trade autopsy: autopsy_reports, autopsy/<trade_id>.html, AUTOPSY_DONE")
