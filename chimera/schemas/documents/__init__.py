"""Typed documents (msgspec Structs, Decimal money), one module per owning service (ARCHITECTURE §1, §6)."""
