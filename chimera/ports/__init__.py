"""Ports that are not risk ports: one module per port, a Redis implementation (one hash slot per
script) and an in-memory one (ARCHITECTURE §1)."""
