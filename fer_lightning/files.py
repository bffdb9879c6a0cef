"""File writing that never leaves half a file behind."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fer_lightning.errors import FERUserError

# temp files are named for their writer: .tmp-<host>-<pid>-<random><suffix>
_TEMP_PREFIX = ".tmp-"


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write`` on a temp file in ``path``'s directory, flush it to disk, then rename it to
    ``path``, so that readers (and concurrent writers) never see a partial file and a crash
    mid-write leaves the previous ``path`` intact. The file gets the usual umask permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = f"{socket.gethostname().replace('-', '_')}-{os.getpid()}"
    temp_path = path.with_name(f"{_TEMP_PREFIX}{writer}-{uuid.uuid4().hex}{path.suffix}")
    handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as temp:
            write(temp)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def remove_stale_temp_files(folder: Path, suffix: str) -> None:
    """Delete the temp files of ``write_atomically`` in ``folder`` whose writer, a process of
    this machine, is gone (``kill -9`` mid-write); other machines' writers are left alone."""
    host = socket.gethostname().replace("-", "_")
    for temp in folder.glob(f"{_TEMP_PREFIX}{host}-*{suffix}"):
        pid = temp.name.removeprefix(f"{_TEMP_PREFIX}{host}-").split("-")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            temp.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_output(path: Path, write: Callable[[BinaryIO], object], setting: str = "") -> None:
    """``write_atomically`` for a file the user named: a write error (a full disk, a read-only
    folder, a path under a file) is one line naming ``path`` (as ``setting=path`` when given)
    rather than a traceback about a temporary file; nothing is left half-written."""
    try:
        write_atomically(path, write)
    except OSError as err:
        named = f"{setting}={path}" if setting else str(path)
        # a file where a folder should be: mkdir says "File exists", which names no file
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else err.strerror or str(err)
        raise FERUserError(f"{named}: cannot write it ({reason})") from err
