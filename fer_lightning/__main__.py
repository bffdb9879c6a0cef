"""The `fer-lightning <task> [hydra overrides]` command (also `python -m fer_lightning <task> ...`).

Each task is a module run as `python -m fer_lightning.<task>` runs it, so both spellings take the
same arguments (Hydra overrides, `--help`, `-m` for a sweep, predict's photo as first argument).
"""

from __future__ import annotations

import runpy
import sys
from importlib.util import find_spec

# task -> (module run as __main__, what it does)
TASKS: dict[str, tuple[str, str]] = {
    "train": ("fer_lightning.train", "fit a model, select on PublicTest, test once on PrivateTest"),
    "evaluate": ("fer_lightning.evaluate", "score a checkpoint on one split (ckpt_path=...)"),
    "predict": ("fer_lightning.predict", "expressions of faces in photos, folders, videos, webcam"),
    "export": ("fer_lightning.export", "a deployable ONNX or TorchScript file, parity-checked"),
    "explore": ("fer_lightning.explore", "figures of the data and of a model's predictions"),
    "distill": ("fer_lightning.distill", "teachers' probabilities as targets for a distilled net"),
    "serve": ("fer_lightning.serve", "the web app"),
}
USAGE = "usage: fer-lightning <task> [hydra overrides]  (fer-lightning <task> --help: its settings)"


def usage() -> str:
    """The usage line and the list of tasks."""
    width = max(map(len, TASKS))
    tasks = [f"  {name:<{width}}  {summary}" for name, (_, summary) in TASKS.items()]
    return "\n".join([USAGE, "", "tasks:", *tasks])


def main(argv: list[str] | None = None) -> None:
    """Run the task named by the first argument with the remaining ones; a missing or unknown task
    prints the tasks and exits with status 2."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        raise SystemExit(0 if args else 2)
    task, *overrides = args
    if task not in TASKS:
        print(f"error: unknown task {task!r}; choose one of {', '.join(TASKS)}", file=sys.stderr)
        raise SystemExit(2)
    module = TASKS[task][0]
    if find_spec(module) is None:
        print(f"error: the {task} task is not in this installation ({module})", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], *overrides]  # run_module puts the module's file first, as -m does
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
