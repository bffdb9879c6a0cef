"""Shared plumbing of the command-line entry points: user mistakes as one line (a mistaken setting
on the command line with the right key), and multirun jobs that fail alone instead of ending the
sweep."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from fer_lightning.errors import FERUserError, first_line
from fer_lightning.files import write_atomically
from fer_lightning.preemption import PREEMPTED_EXIT_STATUS, RunPreempted

log = logging.getLogger(__name__)

T = TypeVar("T")
FAILED_MARKER = "FAILED"
# left in the folder of a multirun job that SIGTERM stopped (it resumes with ckpt_path=auto)
PREEMPTED_MARKER = "PREEMPTED"
# the most keys a hint offers for a setting a task does not have
HINTED_KEYS = 3


def user_error(error: BaseException) -> FERUserError | None:
    """The user mistake behind `error`, if any: Hydra wraps errors raised while it instantiates
    a config node (e.g. a datamodule rejecting batch_size=0) in an InstantiationException, a
    required setting left out (``???`` in the config) raises MissingMandatoryValue, and
    Lightning's own checks of its settings raise MisconfigurationException (e.g. resuming with
    fewer trainer.max_epochs than the checkpoint has done)."""
    mistakes = FERUserError | MissingMandatoryValue | MisconfigurationException
    while error is not None and not isinstance(error, mistakes):
        error = error.__cause__
    if isinstance(error, MissingMandatoryValue):
        key = error.full_key
        return FERUserError(f"{key} is required: add {key}=... to the command")
    if isinstance(error, MisconfigurationException):
        return FERUserError(first_line(error))
    return error


def exit_on_user_error(task: Callable[..., T], *args: object) -> T:
    """Run `task`; a user mistake becomes one line on stderr and exit status 2, not a traceback."""
    try:
        with lightning_noise_muted():
            return task(*args)
    except RunPreempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        raise SystemExit(PREEMPTED_EXIT_STATUS) from None
    except Exception as err:
        mistake = user_error(err)
        if mistake is None:
            raise
        print(f"error: {mistake}", file=sys.stderr)
        raise SystemExit(2) from None


def settings_in_one_line(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a ``@hydra.main`` entry point so that a mistaken setting on the command line (a key the
    task does not have, a config option that does not exist, an override that does not parse) is
    one line on stderr and exit status 2, naming the right key when there is one near it, e.g.
    ``data.csv_path=`` for ``csv_path=``.

    Hydra prints these mistakes over several lines, advising to add the key with ``+``; it passes
    them on only with HYDRA_FULL_ERROR=1, which is therefore set while ``main`` runs (a user's own
    HYDRA_FULL_ERROR=1 still gets Hydra's full errors).
    """

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        before = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main(*args, **kwargs)
        except (ConfigCompositionException, OverrideParseException) as err:
            if before == "1":
                raise
            print(f"error: {setting_mistake(err)}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            if before is None:
                del os.environ["HYDRA_FULL_ERROR"]
            else:
                os.environ["HYDRA_FULL_ERROR"] = before

    return wrapped


def setting_mistake(error: ConfigCompositionException | OverrideParseException) -> str:
    """Hydra's error about the command line's settings as one line, with a hint where one helps."""
    overridden = re.match(r"Could not override '([^']+)'", str(error))
    node = getattr(error.__cause__, "parent_node", None)
    if overridden and isinstance(node, DictConfig):
        return unknown_setting(overridden.group(1), node._get_root())
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, _, name = error.missing_cfg_file.rpartition("/")
        return f"{group}={name}: there is no such {group} (the options: {', '.join(error.options)})"
    # not Hydra's advice to add a key or a config with "+": that is not what a user meant
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("To append"))


def unknown_setting(key: str, root: DictConfig) -> str:
    """A task's answer to ``key=...`` when its config has no ``key``: the keys that end like it
    (``data.csv_path`` for ``csv_path``), begin like it or are spelled nearly like it, else the
    settings of the deepest node of ``key`` that exists."""
    task = root.get("task_name", "this task")
    tree = OmegaConf.to_container(root, resolve=False)
    tree.pop("hydra", None)
    settings = list(_setting_paths(tree))
    last = key.rpartition(".")[2]
    near = (
        [path for path in settings if path.endswith(f".{key}")]
        or [path for path in settings if path.rpartition(".")[2] == last]
        or [path for path in settings if path.startswith(key)]
        or difflib.get_close_matches(key, settings, n=HINTED_KEYS, cutoff=0.8)
    )
    if near:
        keys = " or ".join(f"{path}=..." for path in near[:HINTED_KEYS])
        return f"{task} has no setting {key}; did you mean {keys}?"
    node, parents = tree, []
    for part in key.split(".")[:-1]:
        if not isinstance(node.get(part), dict):
            break
        node = node[part]
        parents.append(part)
    where = f" of {'.'.join(parents)}" if parents else ""
    return f"{task} has no setting {key}; the settings{where} are {', '.join(node)}"


def _setting_paths(tree: dict, parent: str = "") -> Iterator[str]:
    """The dotted keys of every node and value of a config tree (lists are values)."""
    for key, value in tree.items():
        path = f"{parent}.{key}" if parent else str(key)
        yield path
        if isinstance(value, dict):
            yield from _setting_paths(value, path)


def run_task(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run a Hydra task function on `cfg`.

    A single run behaves like :func:`exit_on_user_error`. In a multirun, a failing job (user
    mistake or crash) is logged and recorded in its folder and returns None, so the other jobs
    still run: the basic sweeper ignores return values, and the Optuna sweeper marks the trial
    failed (a NaN would crash it). `ReportFailedJobs` lists the failures at the end. A job that
    SIGTERM stopped is recorded as preempted and ends the sweep with status 143: the process is
    going away, so the jobs after it do not start.
    """
    if not in_multirun():
        return exit_on_user_error(task, cfg)
    try:
        with lightning_noise_muted():
            return task(cfg)
    except RunPreempted as stop:
        record_job_preempted(stop)
        raise SystemExit(PREEMPTED_EXIT_STATUS) from None
    except Exception as err:  # any failure of one job; KeyboardInterrupt still ends the sweep
        record_job_failure(err)
        return None


class _DropTips(logging.Filter):
    """Drops Lightning's adverts ("💡 Tip: ... try installing ..."), printed on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


DROP_LIGHTNING_TIPS = _DropTips()


@contextmanager
def lightning_noise_muted() -> Iterator[None]:
    """Mute what Lightning prints on every run that no user can act on: its adverts, and a
    deprecation raised inside Lightning itself on this torch."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(DROP_LIGHTNING_TIPS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        yield


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (a sweep)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _current_job() -> str:
    """The running multirun job, as ReportFailedJobs names it: its number and overrides."""
    hydra_cfg = HydraConfig.get()
    return f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task) or 'no overrides'})"


def record_job_preempted(stop: RunPreempted) -> None:
    """Leave a PREEMPTED file in the job folder and say, in one line, that the sweep stops and
    how to resume it."""
    hydra_cfg = HydraConfig.get()
    job = _current_job()
    marker = Path(hydra_cfg.runtime.output_dir) / PREEMPTED_MARKER
    write_atomically(marker, lambda file: file.write(f"{job}\n{stop}\n".encode()))
    print(
        f"preempted: {job} {str(stop).split('; resume')[0]} (details: {marker}); the sweep "
        f"stops here; resume it with the same command plus ckpt_path=auto "
        f"hydra.sweep.dir={hydra_cfg.sweep.dir}",
        file=sys.stderr,
    )


def record_job_failure(error: Exception) -> None:
    """Log a failed multirun job and leave a FAILED file in its job folder: the job, a one-line
    summary and, for errors that are not user mistakes, the traceback."""
    hydra_cfg = HydraConfig.get()
    job = _current_job()
    mistake = user_error(error)
    if mistake is not None:
        summary, details = str(mistake), ""
        log.error("%s failed: %s", job, mistake)
    else:
        summary = f"{type(error).__name__}: {error}".splitlines()[0]
        details = "".join(traceback.format_exception(error))
        log.error("%s failed", job, exc_info=error)
    marker = Path(hydra_cfg.runtime.output_dir) / FAILED_MARKER
    write_atomically(marker, lambda file: file.write(f"{job}\n{summary}\n{details}".encode()))


class ReportFailedJobs(Callback):
    """At the end of a multirun, list the jobs that left a FAILED or PREEMPTED file and exit with
    status 1. The run folder itself is checked first: one under a file is one line.

    Works with any launcher whose jobs write into the sweep folder (basic, submitit on SLURM).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_creatable_folder(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_creatable_folder(config.hydra.sweep.dir, "hydra.sweep.dir")
        for name in (FAILED_MARKER, PREEMPTED_MARKER):  # of an earlier sweep
            for stale in Path(config.hydra.sweep.dir).rglob(name):
                stale.unlink()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = sorted([*sweep_dir.rglob(FAILED_MARKER), *sweep_dir.rglob(PREEMPTED_MARKER)])
        if not failures:
            return
        lines = [f"error: {len(failures)} multirun job(s) failed or were preempted:"]
        for marker in failures:
            job, summary = [*marker.read_text().splitlines(), ""][:2]
            lines.append(f"  {job}: {summary} (details: {marker})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)


def check_creatable_folder(folder: str, setting: str) -> None:
    """Exit in one line (status 2) when ``folder`` cannot be a folder: it, or a folder above it,
    is a file. Hydra would fail creating it with a traceback."""
    path = Path(folder).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                print(
                    f"error: {setting}={folder}: {candidate} is a file, not a folder",
                    file=sys.stderr,
                )
                raise SystemExit(2)
            return


def hydra_quoted(value: str) -> str:
    """``value`` as a single-quoted Hydra override value: quotes, and backslashes before a quote
    or at the end, are escaped."""
    value = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"
