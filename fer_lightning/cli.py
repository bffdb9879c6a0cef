"""Shared plumbing of the command-line entry points."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from fer_lightning.errors import FERUserError

T = TypeVar("T")


def exit_on_user_error(task: Callable[..., T], *args: object) -> T:
    """Run `task`; a user mistake becomes one line on stderr and exit status 2, not a traceback."""
    try:
        return task(*args)
    except FERUserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
