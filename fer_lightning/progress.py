"""Progress of long loops that run outside Lightning's (which shows its own bar): a bar in a
terminal, log lines elsewhere (a pipe, a log file, a batch job), so no long step is silent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
# seconds between two progress lines when there is no terminal to draw a bar in
LOG_INTERVAL_S = 10.0


def tracked(items: Sequence[T], description: str, unit: str = "steps") -> Iterator[T]:
    """Yield ``items`` one by one while showing how many are done: a rich bar on stderr when it is
    a terminal, else a log line when the loop starts, about every ``LOG_INTERVAL_S`` seconds,
    and when it ends."""
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            yield from progress.track(items, description=description)
        return
    total = len(items)
    log.info("%s: 0/%d %s", description, total, unit)
    start = reported = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - reported >= LOG_INTERVAL_S or done == total:
            log.info("%s: %d/%d %s, %.0f s", description, done, total, unit, now - start)
            reported = now
