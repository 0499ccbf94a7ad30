"""Where the shared real market data lives: ``<repo>/../shared/data/market`` (CI lays ``shared/``
beside the clone; no absolute path is promised)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKET_DIR = REPO_ROOT.parent / "shared" / "data" / "market"


def market_data(*parts: str) -> Path:
    """A path inside the shared market data; a clear error naming the expected place if it is absent."""
    if not MARKET_DIR.is_dir():
        raise FileNotFoundError(f"shared market data not found at {MARKET_DIR} (expected <repo>/../shared/data/market; "
                                f"lay the shared/ directory beside the repository)")
    path = MARKET_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the shared market data (see {MARKET_DIR / 'SOURCES.md'})")
    return path
