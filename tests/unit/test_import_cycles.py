"""Lint step: ``chimera/`` has no import cycle (module-level and function-level imports alike), as
counted by the shared tool ``../shared/tools/import_cycles.py`` (path relative to the repo root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT.parent / "shared" / "tools" / "import_cycles.py"


def test_chimera_has_no_import_cycle():
    assert TOOL.is_file(), f"the import-cycle tool is expected at {TOOL} (<repo>/../shared/tools/import_cycles.py)"
    out = subprocess.run([sys.executable, str(TOOL), ".", "chimera"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1].endswith(" cycles"), f"unexpected tool output: {out.stdout!r}"
    assert lines[-1] == "0 cycles", "import cycles in chimera/:\n" + "\n".join(lines)
