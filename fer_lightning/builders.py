"""Turn the Hydra config groups into Lightning objects (trainer, callbacks, loggers), after
checking their settings against the types the targets declare."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

import hydra
import pydantic
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning import Callback, Trainer
from pytorch_lightning.loggers import Logger

from fer_lightning.errors import FERUserError

# keys of a `_target_` node that are Hydra's, not the target's
_HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# settings the project adds to a target's own (the trainer's `gpus` alias, checked where resolved)
ALIASES = {"pytorch_lightning.Trainer": frozenset({"gpus"})}


def check_setting_types(cfg: DictConfig) -> None:
    """Refuse, before anything runs, a setting of any ``_target_`` node of ``cfg`` that its
    target does not take, or whose value does not fit the type the target declares for it (e.g.
    ``trainer.max_epochs=abc``, ``model.optimizer.lr=abc``), in one line naming the key. Values
    that are themselves configs with a target are checked as nodes; a target that declares no
    type (or one pydantic cannot check) leaves its values to the target."""
    for key, node in _target_nodes(cfg, ""):
        try:
            target = hydra.utils.get_object(node._target_)
        except Exception:  # Hydra reports an unknown target when it instantiates the node
            continue
        parameters, hints = _declared_parameters(target)
        if parameters is None:
            continue
        takes_any = any(param.kind is param.VAR_KEYWORD for param in parameters.values())
        for name in node:
            if name in _HYDRA_KEYS or name in ALIASES.get(node._target_, ()):
                continue
            setting = f"{key}.{name}" if key else name
            if name not in parameters:
                if takes_any:
                    continue
                raise FERUserError(
                    f"{setting} is not a setting of {node._target_}; it takes "
                    f"{', '.join(sorted(set(parameters) - {'self'}))}"
                )
            value = node._get_node(name)
            if OmegaConf.is_config(value) and _holds_target(value):
                continue
            _check_value(setting, node[name], hints.get(name))


def _target_nodes(node: Any, key: str) -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` in ``node`` (outside Hydra's own), with its dotted key."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for name in node:
            if key == "" and name == "hydra":
                continue
            child = node._get_node(name)
            if OmegaConf.is_config(child):
                yield from _target_nodes(child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, ListConfig):
        for index, child in enumerate(node):
            if OmegaConf.is_config(child):
                yield from _target_nodes(child, f"{key}[{index}]")


def _holds_target(node: DictConfig | ListConfig) -> bool:
    return any(True for _ in _target_nodes(node, "x"))


@cache
def _declared_parameters(target: Any) -> tuple[Any, dict[str, Any]]:
    """The parameters of ``target`` (a class: its constructor) and their type hints; (None, {})
    when it has no inspectable signature."""
    function = target.__init__ if inspect.isclass(target) else target
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None, {}
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a hint naming a type imported only for type checkers
        hints = {
            name: param.annotation
            for name, param in parameters.items()
            if not isinstance(param.annotation, str) and param.annotation is not param.empty
        }
    return parameters, hints


_ANY_TYPE = pydantic.ConfigDict(arbitrary_types_allowed=True)


@cache
def _type_adapter(annotation: Any) -> pydantic.TypeAdapter | None:
    try:
        return pydantic.TypeAdapter(annotation, config=_ANY_TYPE)
    except Exception:  # a type pydantic cannot check: left to the target
        return None


def _check_value(setting: str, value: Any, annotation: Any) -> None:
    """Refuse ``value`` when it cannot be read as ``annotation`` (pydantic's lax mode, which lets
    through what the target may convert itself, such as a list for a tuple)."""
    if annotation is None or annotation is Any:
        return
    adapter = _type_adapter(annotation)
    if adapter is None:
        return
    plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    try:
        adapter.validate_python(plain)
    except pydantic.ValidationError:
        expected = inspect.formatannotation(annotation).replace("typing.", "")
        expected = expected if len(expected) <= 160 else expected[:157] + "..."
        raise FERUserError(
            f"{setting}={plain!r} is not a valid value: expected {expected}"
        ) from None
    except Exception:  # a validator that fails on its own (e.g. an unhashable type): no verdict
        return


def resolve_gpus_alias(trainer_cfg: DictConfig) -> DictConfig:
    """Translate the Lightning 1.x `gpus=N` flag into `accelerator`/`devices`.

    `gpus=0` means CPU; `gpus=N>0` needs N visible CUDA devices and otherwise fails at once,
    in one line, as does `accelerator=gpu` (the `trainer=gpu` preset) without a GPU.
    """
    resolved = OmegaConf.to_container(trainer_cfg, resolve=True)
    gpus = resolved.pop("gpus", None)
    if gpus is None:
        accelerator = resolved.get("accelerator")
        # Lightning's "gpu" is CUDA or Apple's MPS; "cuda" only CUDA
        mps = accelerator == "gpu" and torch.backends.mps.is_available()
        if accelerator in ("gpu", "cuda") and _visible_gpus() == 0 and not mps:
            raise FERUserError(
                f"trainer.accelerator={resolved['accelerator']} (e.g. trainer=gpu) but no GPU "
                "is available on this machine (torch.cuda.is_available() is False); drop "
                "trainer=gpu to train on the CPU"
            )
        return OmegaConf.create(resolved)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise FERUserError(f"trainer.gpus must be a whole number >= 0 (got {gpus!r})")
    if gpus == 0:
        resolved.update(accelerator="cpu", devices=1)
        return OmegaConf.create(resolved)
    available = _visible_gpus()
    if available == 0:
        raise FERUserError(
            f"trainer.gpus={gpus} asks for a GPU but no GPU is available on this machine "
            "(torch.cuda.is_available() is False); use trainer.gpus=0 or leave it unset "
            "to train on the CPU"
        )
    if gpus > available:
        raise FERUserError(
            f"trainer.gpus={gpus} asks for {gpus} GPUs but only {available} are available"
        )
    resolved.update(accelerator="gpu", devices=gpus)
    return OmegaConf.create(resolved)


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def instantiate_group(group_cfg: DictConfig | None) -> list[Any]:
    """Instantiate each entry of a config group mapping (callbacks, loggers), skipping nulls."""
    if not group_cfg:
        return []
    return [hydra.utils.instantiate(entry) for entry in group_cfg.values() if entry is not None]


def build_trainer(
    trainer_cfg: DictConfig, callbacks: list[Callback], loggers: list[Logger] | bool
) -> Trainer:
    """The Lightning Trainer from `trainer/*.yaml`, with the `gpus` alias resolved (here only)."""
    return hydra.utils.instantiate(
        resolve_gpus_alias(trainer_cfg), callbacks=callbacks, logger=loggers
    )


def check_runs_test_batches(trainer: Trainer, hint: str = "") -> None:
    """Refuse, before any work, a test limited to no batch: it would leave nothing to report."""
    if trainer.limit_test_batches == 0:
        raise FERUserError(
            f"trainer.limit_test_batches={trainer.limit_test_batches} runs no test batch, so "
            f"there would be no report{hint}"
        )
