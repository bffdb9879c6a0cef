"""Every command README.md and docs/*.md give for a task (`fer-lightning <task>`, `python -m
fer_lightning <task>`, `python -m fer_lightning.<task>`, `python train.py`, `python evaluate.py`)
composes with its overrides (a user who copies one never meets "not in struct" or an unknown
option), and every training command builds its data and system, on tiny data.

The documents' notation is read as a reader would: ``[a=b]`` is optional (tested with it),
``a=x|y`` means either value, ``<run dir>``-style placeholders stand for paths, ``-m`` sweeps run
every point, and commands shown after a ``$`` prompt demonstrate an error, so they are only
composed.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import Container, DictConfig, OmegaConf

from fer_lightning.config import compose_config
from fer_lightning.data.teacher import teacher_record
from fer_lightning.training import build_data_and_system
from tests.conftest import ROOT, write_ferplus_votes

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TASKS = ("train", "evaluate", "predict", "export", "explore", "distill", "serve")
# each way of starting a task -> the task's entry config
ENTRY_CONFIGS = {
    "python train.py": "train",
    "python evaluate.py": "evaluate",
    **{f"fer-lightning {task}": task for task in TASKS},
    **{f"python -m fer_lightning {task}": task for task in TASKS},
    **{f"python -m fer_lightning.{task}": task for task in TASKS},
}
COMMAND = re.compile(
    r"(\$ )?("
    + "|".join(re.escape(entry) for entry in sorted(ENTRY_CONFIGS, key=len, reverse=True))
    + r")(?![\w.-])(.*)"
)
CODE_BLOCK = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`([^`]+)`")
PLACEHOLDER = re.compile(r"<[^<>]*>")


@dataclass(frozen=True)
class ReadmeCommand:
    """One command line of a document: where it is, its entry config, Hydra overrides, and
    whether it is an error demonstration (shown after a ``$`` prompt)."""

    document: str
    line: int
    config_name: str
    overrides: tuple[str, ...]
    shows_an_error: bool

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.config_name} {' '.join(self.overrides)}"


def _snippets(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every code-block line (``\\``-continued lines joined) and every
    inline code span (which may wrap across lines)."""
    snippets = []
    for block in CODE_BLOCK.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        for offset, line in enumerate(block.group(1).replace("\\\n", " ").split("\n")):
            snippets.append((first_line + offset, line))
    prose = CODE_BLOCK.sub(lambda block: "\n" * block.group(0).count("\n"), text)
    for span in INLINE_CODE.finditer(prose):
        snippets.append((prose.count("\n", 0, span.start()) + 1, span.group(1).replace("\n", " ")))
    return snippets


def _overrides(arguments: str) -> list[list[str]]:
    """README's arguments -> the override lists they stand for (alternatives, sweeps expanded)."""
    arguments = PLACEHOLDER.sub("placeholder", arguments.split(" #")[0])
    # [a=b] is optional; positionals (predict's source) and -m are not overrides
    tokens = [
        token[1:-1] if token.startswith("[") and token.endswith("]") else token
        for token in shlex.split(arguments)
    ]
    pairs = [token.split("=", 1) for token in tokens if "=" in token]
    parser = OverridesParser.create()
    commands = []
    # a=x|y: either value
    for values in itertools.product(*(value.split("|") for _, value in pairs)):
        written = [f"{key}={value}" for (key, _), value in zip(pairs, values, strict=True)]
        points = [
            [
                f"{override.get_key_element()}={value}"
                for value in (
                    override.sweep_string_iterator()
                    if override.is_sweep_override()
                    else [override.get_value_element_as_str()]
                )
            ]
            for override in parser.parse_overrides(written)
        ]
        commands.extend(list(point) for point in itertools.product(*points))
    return commands


def _command_lines(document: Path) -> list[tuple[int, re.Match[str]]]:
    """(line number, match) of every task command in a document's code."""
    return [
        (line, match)
        for line, snippet in _snippets(document.read_text(encoding="utf-8"))
        for match in COMMAND.finditer(snippet)
    ]


def readme_commands() -> list[ReadmeCommand]:
    """Every task command of README.md and docs/*.md, each distinct one once (where it is first
    given)."""
    commands, seen = [], set()
    for document in DOCUMENTS:
        for line, match in _command_lines(document):
            for overrides in _overrides(match.group(3)):
                command = ReadmeCommand(
                    str(document.relative_to(ROOT)),
                    line,
                    ENTRY_CONFIGS[match.group(2)],
                    tuple(overrides),
                    shows_an_error=match.group(1) is not None,
                )
                key = (command.config_name, command.overrides, command.shows_an_error)
                if key not in seen:
                    seen.add(key)
                    commands.append(command)
    return commands


COMMANDS = readme_commands()


def test_readme_commands_are_all_found():
    # counted in the raw text, not through the extractor: a command it misses (another fence, a
    # `python3`) shows up here
    mentions = {
        (str(document.relative_to(ROOT)), text.count("\n", 0, mention.start()) + 1)
        for document in DOCUMENTS
        for text in [document.read_text("utf-8")]
        for mention in re.finditer(
            r"(?:python3? (?:train\.py|evaluate\.py|-m fer_lightning[ .]\w+)|fer-lightning \w+)"
            r"(?![\w.-])",
            text,
        )
        if not mention.group(0).endswith("pretrained")  # the slimming tool, not a task
    }
    assert len(mentions) >= 50
    assert {"README.md", "docs/results.md"} <= {document for document, _ in mentions}
    found = {
        (str(document.relative_to(ROOT)), line)
        for document in DOCUMENTS
        for line, _ in _command_lines(document)
    }
    assert found == mentions
    assert {c.config_name for c in COMMANDS} == set(ENTRY_CONFIGS.values())


def test_readme_reading_expands_notation():
    assert _overrides("a=1 [b=2] c=x|y <same overrides> photo.jpg -m d=3,4 # e=5") == [
        ["a=1", "b=2", "c=x", "d=3"],
        ["a=1", "b=2", "c=x", "d=4"],
        ["a=1", "b=2", "c=y", "d=3"],
        ["a=1", "b=2", "c=y", "d=4"],
    ]
    assert _overrides("ckpt_path=<run dir>/checkpoints/best.ckpt [ids=[0,1]] widths=[8,16]") == [
        ["ckpt_path=placeholder/checkpoints/best.ckpt", "ids=[0,1]", "widths=[8,16]"]
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_readme_command_composes(command: ReadmeCommand, tmp_path: Path):
    # Hydra composes in struct mode: an unknown key or option raises; each value must also land
    cfg = compose_config(command.config_name, tmp_path, command.overrides)
    for override in OverridesParser.create().parse_overrides(list(command.overrides)):
        key = override.key_or_group  # without the + of an added key
        if override.is_delete():
            assert OmegaConf.select(cfg, key) is None, f"{command}: {key} is still set"
        elif key in cfg.hydra.runtime.choices:  # a config group's option
            assert cfg.hydra.runtime.choices[key] == override.value(), command
        else:
            held = OmegaConf.select(cfg, key)
            if isinstance(held, Container):
                held = OmegaConf.to_container(held)
            assert held == override.value(), f"{command}: {key} holds {held!r}"


TRAIN_COMMANDS = [c for c in COMMANDS if c.config_name == "train" and not c.shows_an_error]


@pytest.fixture(scope="module")
def tiny_votes(tiny_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ferplus_votes(tiny_csv, tmp_path_factory.mktemp("votes") / "fer2013new.csv")


def _tiny_data_overrides(
    data: DictConfig, tiny_csv: Path, tiny_votes: Path, data_dir: Path
) -> list[str]:
    """The same data config pointed at tiny files (synthetic data: a small set in `data_dir`)."""
    if "num_train" in data:
        return [
            f"data.data_dir={data_dir}",
            "data.num_train=70",
            "data.num_val=14",
            "data.num_test=14",
        ]
    overrides = [f"data.csv_path={tiny_csv}", "data.cache_dir=null"]
    if "ferplus_csv" in data:
        overrides.append(f"data.ferplus_csv={tiny_votes}")
    return overrides


def _uniform_teacher(data: DictConfig, path: Path) -> Path:
    """A teacher-targets file for the training split of `data` (its file setting unset): every
    class equally likely."""
    datamodule = hydra.utils.instantiate(data, teacher_targets=None)
    arrays = datamodule.split_arrays("train")
    classes = list(datamodule.class_names)
    probabilities = torch.full((len(arrays.labels), len(classes)), 1 / len(classes))
    torch.save(teacher_record(probabilities, arrays, classes, [], []), path)
    return path


@pytest.mark.parametrize("command", TRAIN_COMMANDS, ids=str)
def test_readme_train_command_builds_its_data_and_system(
    command: ReadmeCommand, tmp_path: Path, tiny_csv: Path, tiny_votes: Path
):
    data = compose_config("train", tmp_path, command.overrides).data
    tiny = _tiny_data_overrides(data, tiny_csv, tiny_votes, tmp_path / "data")
    cfg = compose_config("train", tmp_path, [*command.overrides, *tiny])
    if cfg.data.teacher_targets:  # a file of the distill task, made here for the tiny data
        cfg.data.teacher_targets = str(_uniform_teacher(cfg.data, tmp_path / "teacher.pt"))
    datamodule, system = build_data_and_system(cfg)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert system(images).shape == (len(labels), datamodule.num_classes)
