"""S2 feature generator: streaming indicators with resumable state, the handler, recompute, daily regime."""
