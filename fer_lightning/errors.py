"""User-facing errors: reported as one line and a non-zero exit, never as a traceback."""


class FERUserError(Exception):
    """A mistake in the user's input (path, file contents, config) with a one-line explanation."""


class DataFormatError(FERUserError):
    """A data file breaking its format; the message names file, line, field and value."""
