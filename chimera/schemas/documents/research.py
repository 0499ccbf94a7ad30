"""S7 and S8 documents: ``labels_12h|24h|36h/<signal_id>:<h>`` (``Label``) and
``autopsy_reports/<trade_id>`` (``AutopsyReport``). Decimal money; every field has a default so an
older document still decodes (msgspec evolution rules).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from chimera.store.collections import LABELS_12H, LABELS_24H, LABELS_36H

ZERO = Decimal(0)
HORIZONS = (12, 24, 36)
LABEL_COLLECTIONS = {12: LABELS_12H, 24: LABELS_24H, 36: LABELS_36H}
LabelKind = Literal["TRADED", "COUNTERFACTUAL", "NO_DIRECTION", "UNDEFINED"]


class _Doc(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    pass


class Label(_Doc, frozen=True):
    """ROI_net of a signal over ``h`` hours from t0: net of fees and funding, on the entered notional.

    ``TRADED``: the signal's position(s), from ``fills`` (fees) and ``funding_records``; a quantity still
    held at t0+h is valued at the close of the last 1m bar ending by then. ``COUNTERFACTUAL``: the
    signal did not trade; the bundle's standard entry at the signal bar's close with its ATR stop and
    take-profit, walked over 1m bars (stop first when one bar touches both), taker fees both ways,
    funding not modelled. ``NO_DIRECTION``: no side was decided and the bundle has two directions;
    ``UNDEFINED``: the signal has no ATR (features warming up), so the standard entry has no stop.
    """

    signal_id: str
    h: int
    symbol: str = ""
    t0: int = 0
    kind: LabelKind = "TRADED"
    side: str = ""
    roi_net: Decimal | None = None
    label: int = 0  # +1 / 0 / -1 by the bundle's thresholds
    label_class: str = "NEUTRAL"  # POSITIVE / NEUTRAL / NEGATIVE / NONE
    net_pnl: Decimal | None = None
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    funding: Decimal = ZERO
    notional: Decimal = ZERO
    entry_price: Decimal | None = None
    exit_price: Decimal | None = None
    exit_reason: str = ""  # STOP / TAKE_PROFIT / HORIZON / CLOSED
    exit_time: int = 0
    pos_ids: list[str] = []
    bundle_id: str = ""
    config_rev: int = 0


class AutopsyReport(_Doc, frozen=True):
    """S8's analysis of one closed (or stagnating) trade; ``html_key`` is the object store report."""

    trade_id: str
    symbol: str = ""
    side: str = ""
    trigger: str = ""  # EXIT / STAGNATED / REQUEST
    opened_at: int = 0
    closed_at: int = 0
    net_pnl: Decimal = ZERO
    roi_net: Decimal | None = None
    roe_curve: list[tuple[int, float]] = []
    tca: dict = {}
    markouts: dict = {}
    peers: dict = {}
    counterfactuals: dict = {}
    tldr: str = ""
    html_key: str = ""
    html_sha256: str = ""
    html_bytes: int = 0


def to_doc(doc: msgspec.Struct) -> dict:
    return msgspec.to_builtins(doc)


def label_key(signal_id: str, h: int) -> str:
    return f"{signal_id}:{h}"
