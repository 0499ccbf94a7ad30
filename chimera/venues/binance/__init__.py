"""Binance trading adapter over the official modular SDKs (paper | testnet | live: only URL and keys differ)."""

from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    Filters,
    FuturesTrading,
    OrderNotFound,
    SpotTrading,
    VenueError,
    VenueOrder,
    VenueRateLimited,
    VenueRejected,
    VenueUnknown,
    client_order_id,
    venue_from_settings,
)

__all__ = [
    "AlreadyAccepted", "Filters", "FuturesTrading", "OrderNotFound", "SpotTrading", "VenueError", "VenueOrder",
    "VenueRateLimited", "VenueRejected", "VenueUnknown", "client_order_id", "venue_from_settings",
]
