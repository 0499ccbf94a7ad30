"""Envelope codec, registry and evolution rules."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest

from chimera.schemas.envelope import Envelope, Message, UnknownMessageType, decode, encode, register
from chimera.schemas.messages import FeaturesComputed, OrderIntent, SubmitOrder


def test_round_trip_keeps_types_and_decimals():
    intent = OrderIntent(intent_id="i1", market="FUT", symbol="BTCUSDT", side="BUY", qty=Decimal("0.0012"),
                         sl_price=Decimal("57000.1"))
    env = Envelope(type="submit_order", idempotency_key="i1", account_id="sub1", event_time=123,
                   payload=SubmitOrder(intent=intent))
    back = decode(encode(env), "5-0", "ord:{commands}")
    assert back.payload == SubmitOrder(intent=intent)
    assert back.payload.intent.qty == Decimal("0.0012") and isinstance(back.payload.intent.qty, Decimal)
    assert (back.account_id, back.event_time, back.entry_id, back.stream) == ("sub1", 123, "5-0", "ord:{commands}")


def test_account_defaults_to_main():
    env = decode(encode(Envelope(type="features", idempotency_key="s", payload=FeaturesComputed(
        signal_id="s", t0=1, symbol="BTCUSDT", features={"atr": 1.5}))))
    assert env.account_id == "main"


def test_unknown_type_and_version_are_refused():
    env = Envelope(type="features", version=9, idempotency_key="s",
                   payload=FeaturesComputed(signal_id="s", t0=1, symbol="X", features={}))
    with pytest.raises(UnknownMessageType, match="features.*version 9"):
        decode(encode(env))


def test_payload_type_mismatch_is_a_validation_error():
    fields = encode(Envelope(type="submit_order", idempotency_key="x",
                             payload=FeaturesComputed(signal_id="s", t0=1, symbol="X", features={})))
    with pytest.raises(msgspec.ValidationError):
        decode(fields)


def test_new_version_decodes_side_by_side():
    class ProbeV1(Message, frozen=True, tag="probe"):
        a: int

    class ProbeV2(Message, frozen=True, tag="probe"):
        VERSION = 2
        a: str
        b: int = 0

    register(ProbeV1, ProbeV2)
    v1 = decode(encode(Envelope(type="probe", version=1, idempotency_key="p", payload=ProbeV1(a=1))))
    v2 = decode(encode(Envelope(type="probe", version=2, idempotency_key="p", payload=ProbeV2(a="x", b=2))))
    assert isinstance(v1.payload, ProbeV1) and isinstance(v2.payload, ProbeV2)


def test_new_field_with_default_reads_old_data():
    class OldShape(msgspec.Struct, tag="order_intent", tag_field="type"):
        intent_id: str
        market: str
        symbol: str
        side: str
        qty: str

    raw = msgspec.msgpack.encode(OldShape("i", "FUT", "ETHUSDT", "SELL", "1"))
    intent = msgspec.msgpack.decode(raw, type=OrderIntent)
    assert intent.exec_policy == "MARKET" and intent.reduce_only is False
