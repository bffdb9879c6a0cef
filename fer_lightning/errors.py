"""User-facing errors: reported as one line and a non-zero exit, never as a traceback."""

import re

# terminal colour and style codes some libraries put in their messages (torch's weights_only)
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (its type name when it has none), for the
    reason part of a one-line error."""
    text = _ANSI_ESCAPE.sub("", str(error)).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


class FERUserError(Exception):
    """A mistake in the user's input (path, file contents, config) with a one-line explanation."""


class DataFormatError(FERUserError):
    """A data file breaking its format; the message names file, line, field and value."""


def check_whole_number(name: str, value: object, minimum: int) -> int:
    """``value`` when it is a whole number >= ``minimum`` (neither a bool nor 2.5), else a one-line
    error naming the setting ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FERUserError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


class ImageError(FERUserError):
    """An image that cannot be read: a missing, empty or undecodable file, an array of the wrong
    type or shape, or one over the pixel limit."""
