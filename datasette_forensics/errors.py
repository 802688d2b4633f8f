"""The one exception type that reaches an analyst: a clear sentence, no traceback."""


class ForensicsError(Exception):
    """A user-facing error: its message is one complete sentence."""
