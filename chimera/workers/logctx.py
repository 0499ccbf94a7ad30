"""Every line a handler logs carries the ids of the entry in hand (ARCHITECTURE §9): role, entry
id, correlation id and causation id, in loguru's ``extra`` (the JSON sink writes them).

Like ``logger.contextualize``, but paid when a line is logged rather than per entry: the runtime
only sets a context variable to the entry (``bind_entry``/``unbind``), and a loguru patcher copies
the ids into the record. On a no-op handler ``contextualize``'s dict, generator and lock cost as
much as the rest of the entry. Keys a handler binds itself (``logger.bind``/``contextualize``) win.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from loguru import logger

ENTRY: ContextVar[tuple | None] = ContextVar("chimera_entry", default=None)


def _patch(record) -> None:
    entry = ENTRY.get()
    if entry is None:
        return
    role, env = entry
    extra = record["extra"]
    for key, value in (("role", role), ("entry_id", env.entry_id), ("stream", env.stream),
                       ("correlation_id", env.correlation_id or env.idempotency_key),
                       ("causation_id", env.causation_id)):
        extra.setdefault(key, value)


logger.configure(patcher=_patch)


def bind_entry(role: str, env) -> Token:
    """Log lines from here to ``unbind`` carry ``env``'s ids."""
    return ENTRY.set((role, env))


def unbind(token: Token) -> None:
    ENTRY.reset(token)
