"""One exception type for every problem a user can fix; the CLI prints its message without a traceback."""


class VinyError(Exception):
    """A user-facing error: the message names the file or argument at fault and what to do about it."""


class VinyWarning(UserWarning):
    """A user-facing warning: something changed what a run computes (images left out, stand-in data).
    The CLI prints it as one line without the source location; the run's outputs record it too."""
