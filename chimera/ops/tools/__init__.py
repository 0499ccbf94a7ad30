"""Operator tools: the chaos drill, its checks, the pre-warmed fork server and the worker fleet."""
