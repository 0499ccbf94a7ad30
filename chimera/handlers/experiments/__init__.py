"""S9 experiments: hypothesis families through walk-forward with honest statistics (``docs/research.md``)."""
