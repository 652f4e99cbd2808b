"""One exception type for every problem a user can fix; the CLI prints its message without a traceback."""


class VinyError(Exception):
    """A user-facing error: the message names the file or argument at fault and what to do about it."""
