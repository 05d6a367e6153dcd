"""The one exception family whose message is shown to a user as it is, without a traceback."""


class PalmError(Exception):
    """A mistake in the user's input or setup; the message names the file and the problem."""
