"""The one exception family whose message is shown to a user as it is, without a traceback."""


class PalmError(Exception):
    """A mistake in the user's input or setup; the message names the file and the problem."""


def one_line(text: object) -> str:
    """``text`` as one printable line: bytes of a file name that are not UTF-8 (Python keeps
    them as surrogates) shown as ``\\xe9``, control characters (a newline in a name) escaped."""
    text = str(text)
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class DataError(PalmError):
    """A data folder or label sheet that cannot be used (the message says which and why)."""
