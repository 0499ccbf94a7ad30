"""Pure message and document types. No I/O."""

from chimera.schemas.envelope import Envelope, Message, UnknownMessageType, decode, encode, to_builtins
from chimera.schemas.messages import *  # noqa: F403

__all__ = ["Envelope", "Message", "UnknownMessageType", "decode", "encode", "to_builtins"]
