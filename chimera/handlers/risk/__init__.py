"""Account risk: the daily drawdown breaker and account snapshots, on S11's timers (``mount.py``)."""
