"""Binance adapter (no I/O): deterministic client ids, exchange-filter rounding, error translation."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from binance_common.errors import BadRequestError, NetworkError, ServerError, TooManyRequestsError

from chimera.errors import PermanentError, RetryableError
from chimera.venues.binance.adapter import (
    AlreadyAccepted,
    Filters,
    OrderNotFound,
    VenueRateLimited,
    VenueRejected,
    VenueUnknown,
    client_order_id,
    translate,
)


def test_client_order_id_is_deterministic_legal_and_leg_specific():
    a = client_order_id("intent-" + "x" * 80, "mk")
    assert a == client_order_id("intent-" + "x" * 80, "mk")
    assert a != client_order_id("intent-" + "x" * 80, "tk")
    assert len(a) <= 36 and re.fullmatch(r"[.A-Z:/a-z0-9_-]+", a)
    assert client_order_id("i", "tw3").startswith("ctw3-")


def test_filters_round_qty_down_and_passive_prices_away_from_the_touch():
    f = Filters(tick=Decimal("0.1"), step=Decimal("0.001"), min_qty=Decimal("0.001"), min_notional=Decimal(10))
    assert f.qty(Decimal("0.0129")) == Decimal("0.012")
    assert f.price(Decimal("30000.04"), "BUY", passive=True) == Decimal("30000.0")
    assert f.price(Decimal("30000.04"), "SELL", passive=True) == Decimal("30000.1")
    assert f.price(Decimal("30000.05")) == Decimal("30000.1")


@pytest.mark.parametrize(("exc", "kind"), [
    (ServerError("Server error: 503", 503), VenueUnknown),
    (NetworkError("connection aborted"), VenueUnknown),
    (TooManyRequestsError("Too many requests", -1003, 1), VenueRateLimited),
    (BadRequestError("ClientOrderId is duplicated.", -4116), AlreadyAccepted),
    (BadRequestError("Duplicate order sent.", -2010), AlreadyAccepted),
    (BadRequestError("Order does not exist.", -2013), OrderNotFound),
    (BadRequestError("Order would immediately trigger.", -2021), VenueRejected),
])
def test_sdk_errors_translate_to_what_the_router_acts_on(exc, kind):
    out = translate(exc)
    assert type(out) is kind
    if kind in (VenueUnknown, VenueRateLimited):
        assert isinstance(out, RetryableError)
    else:
        assert isinstance(out, PermanentError) and out.code == exc.status_code and out.msg == exc.error_message


def test_insufficient_balance_is_a_plain_rejection_not_a_duplicate():
    out = translate(BadRequestError("Account has insufficient balance for requested action.", -2010))
    assert type(out) is VenueRejected
