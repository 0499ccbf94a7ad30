"""Accounts: virtual positions (HedgeStack) over shared venue accounts.

``virtual.py`` is the pure ledger, ``attribution.py`` says which strategy a venue fill belongs to,
``role.py`` is the ``vpos`` worker that keeps the books in the store, ``views.py`` reads them.
"""
