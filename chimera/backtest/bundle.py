"""``--bundle FILE``: read, checked with S3's own bundle parser, hashed; errors name the file and line."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from chimera.errors import PermanentError


class BundleError(ValueError):
    pass


@dataclass(frozen=True)
class Bundle:
    path: str
    bundle_id: str
    rev: int
    body: dict
    sha256: str


def load_bundle(path: str) -> Bundle:
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"--bundle {path}: no such file")
    raw = p.read_bytes()
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"--bundle {path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(body, dict):
        raise BundleError(f"--bundle {path}: a bundle is a JSON object with a 'strategy' section")
    if not isinstance(body.get("strategy"), dict):
        raise BundleError(f"--bundle {path}: field 'strategy' is missing; S3 has nothing to trade")
    bundle_id = str(body.get("bundle_id") or p.stem)
    try:
        rev = int(body.get("rev", 1))
    except (TypeError, ValueError):
        raise BundleError(f"--bundle {path}: field 'rev' must be an integer, not {body.get('rev')!r}") from None
    from chimera.handlers.config.lint import lint
    from chimera.handlers.strategy import reverse
    from chimera.handlers.strategy.bundle import parse

    report = lint(body, raw.decode("utf-8", errors="replace"))
    if not report.ok:  # S10's lint: every error with its JSON path and, where it can tell, line and column
        raise BundleError(f"--bundle {path}: fails lint: " + "; ".join(
            f"{e.path}" + (f" (line {e.line} column {e.column})" if e.line else "") + f": {e.message}"
            for e in report.errors))
    try:
        parse(body["strategy"], bundle_id, rev, features=body.get("features"))
        reverse.options(body["strategy"])
    except PermanentError as exc:
        raise BundleError(f"--bundle {path}: {exc}") from None
    return Bundle(path=str(p), bundle_id=bundle_id, rev=rev, body=body, sha256=hashlib.sha256(raw).hexdigest())
