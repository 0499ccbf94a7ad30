"""The one small error hierarchy. Library errors are translated into these at the boundary.

* ``RetryableError``: try again later (the entry stays pending and is reclaimed).
* ``PermanentError``: this input can never succeed (dead-letter it, ack, move on).
* ``FatalError``: the worker cannot run (bad config): stop the process with a clear message.
"""


class ChimeraError(Exception):
    pass


class RetryableError(ChimeraError):
    pass


class PermanentError(ChimeraError):
    pass


class FatalError(ChimeraError):
    pass


class NotYetImplemented(FatalError):
    """A capability that is planned but not built: said plainly, never faked."""
