"""Experiment loggers by name (`LoggerConfig`, `LoggerManager`) and what a task logs (`LoggingConfig`)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger

from autotimm._errors import check_bool, check_list, check_mapping, coerce_config, unknown_choice

__all__ = ["LoggerConfig", "LoggerManager", "LoggingConfig", "list_loggers", "resolve_loggers"]


@dataclass(frozen=True)
class _LoggerEntry:
    class_path: str
    requires: tuple[str, ...]  # any one of these packages must be importable
    extra: str


_LOGGERS: dict[str, _LoggerEntry] = {
    "tensorboard": _LoggerEntry(
        "pytorch_lightning.loggers.TensorBoardLogger", ("tensorboard", "tensorboardX"), "tensorboard"
    ),
    "csv": _LoggerEntry("pytorch_lightning.loggers.CSVLogger", (), ""),
    "wandb": _LoggerEntry("pytorch_lightning.loggers.WandbLogger", ("wandb",), "wandb"),
}


def list_loggers() -> list[str]:
    """Names accepted by `LoggerConfig(backend=...)`.

    Examples:
        >>> list_loggers()
        ['csv', 'tensorboard', 'wandb']
    """
    return sorted(_LOGGERS)


@dataclass
class LoggerConfig:
    """One experiment logger, by backend name.

    Args:
        backend: `"tensorboard"`, `"csv"` or `"wandb"` (see `list_loggers()`).
        params: Keyword arguments for the Lightning logger class. `save_dir` defaults to the
            trainer's `default_root_dir`. W&B works offline with `WANDB_MODE=offline` or
            `params={"offline": True}`.

    Examples:
        >>> LoggerConfig(backend="csv", params={"save_dir": "logs"}).backend
        'csv'
    """

    backend: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str):
            raise TypeError(
                f"Expected `backend` to be one of {list_loggers()}, but got "
                f"{type(self.backend).__name__} {self.backend!r}."
            )
        self.backend = self.backend.lower()
        if self.backend not in _LOGGERS:
            raise unknown_choice("backend", self.backend, _LOGGERS)
        self.params = check_mapping("params", self.params)
        entry = _LOGGERS[self.backend]
        if entry.requires and not any(importlib.util.find_spec(p) for p in entry.requires):
            raise ModuleNotFoundError(
                f"The {self.backend!r} logger needs the package {entry.requires[0]!r}: "
                f"pip install {entry.requires[0]} (or pip install -e '.[{entry.extra}]' in a clone of autotimm)"
            )
        signature = inspect.signature(self._logger_cls)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
        if not takes_any:
            for key in self.params:
                if key not in signature.parameters:
                    argument = f"each key of `params` for the {self.backend} logger"
                    raise unknown_choice(argument, key, signature.parameters)

    @property
    def _logger_cls(self) -> type[Logger]:
        module_name, _, name = _LOGGERS[self.backend].class_path.rpartition(".")
        return getattr(importlib.import_module(module_name), name)

    def build(self, default_save_dir: str | Path = ".", run_folder: bool = False) -> Logger:
        """Create the Lightning logger.

        Args:
            default_save_dir: `save_dir` unless `params` gives one.
            run_folder: `default_save_dir` belongs to one run (`<run_dir>/logs`): TensorBoard and CSV
                files go to `<default_save_dir>/<backend>/` (no `version_N` folder) unless `params`
                name another `save_dir`, `name` or `version`.
        """
        params = dict(self.params)
        if run_folder and "save_dir" not in params and self.backend in ("tensorboard", "csv"):
            params.setdefault("name", self.backend)
            params.setdefault("version", "")
        params.setdefault("save_dir", str(default_save_dir))
        return self._logger_cls(**params)


class LoggerManager:
    """A set of loggers configured by name, passed to `AutoTrainer(logger=...)`.

    Examples:
        >>> manager = LoggerManager([LoggerConfig("csv"), LoggerConfig("tensorboard")])
        >>> [type(lg).__name__ for lg in manager.build("runs")]
        ['CSVLogger', 'TensorBoardLogger']
    """

    def __init__(self, configs: Sequence[LoggerConfig | Logger] | LoggerConfig | Logger) -> None:
        if isinstance(configs, (LoggerConfig, Logger)):
            configs = [configs]
        configs = check_list("configs", configs, of="LoggerConfig or Lightning Logger")
        for cfg in configs:
            if not isinstance(cfg, (LoggerConfig, Logger)):
                raise TypeError(
                    f"Expected each entry of `configs` to be a LoggerConfig or a Lightning Logger, but got {cfg!r}."
                )
        self.configs = configs

    def build(self, default_save_dir: str | Path = ".", run_folder: bool = False) -> list[Logger]:
        """Create the Lightning loggers (see `LoggerConfig.build`); ready-made loggers are passed through."""
        return [c.build(default_save_dir, run_folder) if isinstance(c, LoggerConfig) else c for c in self.configs]


def resolve_loggers(
    logger: Any, default_save_dir: str | Path, run_folder: bool = False
) -> bool | Logger | list[Logger]:
    """Turn `AutoTrainer(logger=...)` into what `pytorch_lightning.Trainer` takes.

    Accepts `False`/`True`/`None`, a `LoggerManager`, a `LoggerConfig`, a Lightning `Logger`,
    or a list mixing `LoggerConfig` and `Logger`. With `run_folder`, `True` is Lightning's
    default logger (TensorBoard) built in `default_save_dir` as `LoggerConfig.build` does.
    """
    if run_folder and logger is True:
        logger = LoggerConfig("tensorboard")
    if logger is None or isinstance(logger, bool):
        return bool(logger)
    if isinstance(logger, Logger):
        return logger
    if isinstance(logger, (LoggerConfig, list, tuple)):
        logger = LoggerManager(logger)
    if isinstance(logger, LoggerManager):
        return logger.build(default_save_dir, run_folder)
    raise TypeError(
        "Expected `logger` to be False, True, a LoggerManager, a LoggerConfig, a Lightning Logger or a list of "
        f"them, but got {logger!r}."
    )


@dataclass
class LoggingConfig:
    """What a task logs besides its loss and metrics.

    Args:
        log_learning_rate: Log `train/lr` (the first parameter group's learning rate).
        log_gradient_norm: Log `train/grad_norm` (total L2 norm of the gradients, before
            clipping) at the trainer's `log_every_n_steps`.

    Examples:
        >>> LoggingConfig(log_gradient_norm=True).log_learning_rate
        True
    """

    log_learning_rate: bool = True
    log_gradient_norm: bool = False

    def __post_init__(self) -> None:
        check_bool("log_learning_rate", self.log_learning_rate)
        check_bool("log_gradient_norm", self.log_gradient_norm)

    @classmethod
    def coerce(cls, config: LoggingConfig | dict[str, Any] | None) -> LoggingConfig:
        """Accept a config, its dict form, or `None` (the defaults)."""
        if config is None:
            return cls()
        return coerce_config(cls, "logging_config", config, "`logging_config` to be a LoggingConfig, a dict or None")
