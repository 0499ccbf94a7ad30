"""``chimera backtest``: the real handlers (S2 → S3 → S4 → S6) on the in-process runtime against the
venue engine in-process, in event time (docs/backtest.md)."""
