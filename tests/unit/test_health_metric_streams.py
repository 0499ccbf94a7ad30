"""S11 reads every metric stream a producer writes: each ``keys.metrics_stream(NAME)`` in the code (a literal,
or a module constant of the same file) is one of S11's streams (issue 13: ``s8.autopsy_latency``)."""

from __future__ import annotations

import re
from pathlib import Path

from chimera.handlers.health.role import SPEC
from chimera.ops.settings import Settings
from chimera.streams import keys

ROOT = Path(__file__).resolve().parents[2] / "chimera"
CALL = re.compile(r"metrics_stream\((\"[^\"]+\"|[A-Z_]+)\)")


def published() -> dict[str, str]:
    out = {}
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        for arg in CALL.findall(text):
            if arg.startswith('"'):
                out[arg.strip('"')] = str(path)
            else:
                m = re.search(rf"^{arg} = \"([^\"]+)\"", text, re.M)
                assert m, f"{path}: metrics_stream({arg}) with no constant {arg} in the file"
                out[m.group(1)] = str(path)
    return out


def test_s11_reads_every_metric_stream_the_code_writes():
    names = published()
    assert "s8.autopsy_latency" in names and "s2.regime_latency" in names
    streams = set(SPEC.streams(Settings()))
    missing = {n: where for n, where in names.items() if keys.metrics_stream(n) not in streams}
    assert missing == {}
