"""The one envelope every stream entry carries, and its codec.

Evolution rules (msgspec, frozen, tagged from day one):

* Every payload type is a ``Message`` subclass with a unique ``tag`` and a ``VERSION``.
* A new field always gets a default, so old producers stay decodable.
* A field's type never changes. A breaking change is a *new* struct with the same tag and
  ``VERSION + 1``; both classes stay registered and are decoded side by side, keyed by
  ``(type, version)`` from the envelope.
* An entry whose ``(type, version)`` is unknown is dead-lettered by the runtime, never guessed.

On the wire a stream entry has two fields: ``t`` (the type, so operators can filter with
``redis-cli`` without decoding) and ``e`` (msgpack of the envelope with the payload nested).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every payload. Subclasses set ``tag=...`` and may bump ``VERSION``."""

    VERSION: ClassVar[int] = 1


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    version: int = 1
    idempotency_key: str
    correlation_id: str = ""
    causation_id: str = ""
    event_time: int = 0  # epoch ms, from the producer's clock (replay time in replays)
    account_id: str = "main"
    config_rev: int = 0
    payload: Any = None
    # Filled in by the reader from the stream; never encoded.
    entry_id: str = ""
    stream: str = ""


class _Wire(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: str
    version: int = 1
    idempotency_key: str
    correlation_id: str = ""
    causation_id: str = ""
    event_time: int = 0
    account_id: str = "main"
    config_rev: int = 0
    payload: msgspec.Raw = msgspec.Raw(b"\xc0")


class UnknownMessageType(ValueError):
    pass


_REGISTRY: dict[tuple[str, int], type[Message]] = {}
_DECODERS: dict[type[Message], msgspec.msgpack.Decoder] = {}
_ENCODER = msgspec.msgpack.Encoder(decimal_format="string")
_WIRE_DECODER = msgspec.msgpack.Decoder(_Wire)


def register(*classes: type[Message]) -> None:
    for cls in classes:
        tag = cls.__struct_config__.tag
        key = (str(tag), cls.VERSION)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"message type {key} registered twice")
        _REGISTRY[key] = cls
        _DECODERS[cls] = msgspec.msgpack.Decoder(cls)


def message_class(type_: str, version: int = 1) -> type[Message]:
    try:
        return _REGISTRY[(type_, version)]
    except KeyError:
        raise UnknownMessageType(f"unknown message type {type_!r} version {version}") from None


def type_of(payload: Message) -> tuple[str, int]:
    return str(payload.__struct_config__.tag), payload.VERSION


def encode(env: Envelope) -> dict[str, bytes]:
    """Envelope -> stream entry fields."""
    wire = _Wire(
        type=env.type,
        version=env.version,
        idempotency_key=env.idempotency_key,
        correlation_id=env.correlation_id,
        causation_id=env.causation_id,
        event_time=env.event_time,
        account_id=env.account_id,
        config_rev=env.config_rev,
        payload=msgspec.Raw(_ENCODER.encode(env.payload)),
    )
    return {"t": env.type.encode(), "e": _ENCODER.encode(wire)}


def decode(fields: dict, entry_id: str = "", stream: str = "") -> Envelope:
    """Stream entry fields -> Envelope with a typed payload.

    Raises UnknownMessageType or msgspec.DecodeError/ValidationError; the runtime turns
    either into a dead letter.
    """
    raw = fields.get(b"e") if b"e" in fields else fields.get("e")
    if raw is None:
        raise msgspec.DecodeError("stream entry has no 'e' field")
    wire = _WIRE_DECODER.decode(raw)
    cls = message_class(wire.type, wire.version)
    payload = _DECODERS[cls].decode(wire.payload)
    return Envelope(
        type=wire.type,
        version=wire.version,
        idempotency_key=wire.idempotency_key,
        correlation_id=wire.correlation_id,
        causation_id=wire.causation_id,
        event_time=wire.event_time,
        account_id=wire.account_id,
        config_rev=wire.config_rev,
        payload=payload,
        entry_id=entry_id,
        stream=stream,
    )


def to_builtins(obj: Any) -> Any:
    """Structs -> plain JSON-able data (Decimals as strings), for documents and APIs."""
    return msgspec.to_builtins(obj)  # Decimal -> str by default


_JSON = msgspec.json.Encoder(decimal_format="string")


def to_json(obj: Any) -> bytes:
    return _JSON.encode(obj)
