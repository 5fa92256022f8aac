"""Metric configuration: which torchmetrics objects a task computes, and in which stages."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch.nn as nn
import torchmetrics

from autotimm._deprecation import deprecated_alias
from autotimm._errors import check_bool, check_choice, check_list, check_mapping, coerce_config, unknown_choice

__all__ = ["MetricConfig", "build_metrics", "create_metrics", "STAGES"]

STAGES = ("train", "val", "test")
_BACKENDS = ("torchmetrics", "custom")
# Where a torchmetrics class name is looked for, in order.
_TORCHMETRICS_MODULES = ("torchmetrics", "torchmetrics.classification", "torchmetrics.detection")


@dataclass
class MetricConfig:
    """One metric, computed per stage and logged as `<stage>/<name>`.

    Args:
        name: The logged name: `name="accuracy"` logs `val/accuracy`.
        backend: `"torchmetrics"` (look `metric_class` up in torchmetrics) or `"custom"`
            (`metric_class` is a `torchmetrics.Metric` subclass or an import path
            `"package.module.Class"`).
        metric_class: The metric's class name, e.g. `"Accuracy"`, `"F1Score"`, `"AUROC"`.
        params: Keyword arguments for the metric. `task` and `num_classes`/`num_labels`
            are filled in from the model when the metric takes them and they are not given.
        stages: The stages that compute it, among `"train"`, `"val"`, `"test"`.
        prog_bar: Show it in the progress bar.

    Examples:
        >>> cfg = MetricConfig("accuracy", metric_class="Accuracy", params={"task": "multiclass"})
        >>> cfg.create(num_classes=10).__class__.__name__
        'MulticlassAccuracy'
    """

    name: str
    backend: Literal["torchmetrics", "custom"] = "torchmetrics"
    metric_class: str | type = "Accuracy"
    params: dict[str, Any] = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: ["val", "test"])
    prog_bar: bool = False

    def __post_init__(self) -> None:
        expected_name = "a non-empty string without '.', '/' or spaces"
        if not isinstance(self.name, str):
            raise TypeError(f"Expected `name` to be {expected_name}, but got {type(self.name).__name__} {self.name!r}.")
        if not self.name or any(c in self.name for c in "./ "):
            raise ValueError(f"Expected `name` to be {expected_name}, but got {self.name!r}.")
        check_choice("backend", self.backend, _BACKENDS)
        if isinstance(self.stages, str):
            self.stages = [self.stages]
        self.stages = check_list("stages", self.stages, of=f"stage names among {list(STAGES)}")
        for stage in self.stages:
            check_choice("stages", stage, STAGES)
        self.params = check_mapping("params", self.params)
        check_bool("prog_bar", self.prog_bar)
        self.metric_cls  # noqa: B018 - resolve now so a bad name fails at construction

    @property
    def metric_cls(self) -> type:
        """The metric class this config names."""
        if self.backend == "custom":
            return _import_custom(self.metric_class)
        if not isinstance(self.metric_class, str):
            raise TypeError(
                f"With backend='torchmetrics', `metric_class` must be a class name string, but got "
                f"{self.metric_class!r}. Use backend='custom' to pass a class."
            )
        for module_name in _TORCHMETRICS_MODULES:
            cls = getattr(importlib.import_module(module_name), self.metric_class, None)
            if isinstance(cls, type):
                return cls
        names = [n for n in dir(torchmetrics) if n[:1].isupper()]
        raise unknown_choice("metric_class", self.metric_class, names)

    def create(self, num_classes: int | None = None, task: str | None = None) -> torchmetrics.Metric:
        """Build the metric, filling `task` and `num_classes`/`num_labels` where it takes them.

        Args:
            num_classes: The model's number of outputs.
            task: The default `task` (`"binary"`, `"multiclass"`, `"multilabel"`).
        """
        cls = self.metric_cls
        params = dict(self.params)
        accepted = inspect.signature(cls).parameters
        if "task" in accepted and "task" not in params and task is not None:
            params["task"] = task
        task = params.get("task", task)
        if num_classes is not None:
            if "num_classes" in accepted and "num_classes" not in params and task != "binary":
                params["num_classes"] = num_classes
            if "num_labels" in accepted and "num_labels" not in params and task == "multilabel":
                params["num_labels"] = num_classes
        try:
            return cls(**params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"Could not build metric {self.name!r} ({cls.__name__}) with params {params}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, safe for checkpoints and YAML."""
        out = asdict(self)
        if isinstance(self.metric_class, type):
            out["metric_class"] = f"{self.metric_class.__module__}.{self.metric_class.__qualname__}"
        return out

    @classmethod
    def coerce(cls, metric: MetricConfig | dict[str, Any]) -> MetricConfig:
        """Accept a config or its `to_dict()` form."""
        return coerce_config(cls, "metrics", metric, "each entry of `metrics` to be a MetricConfig or its dict form")

    @classmethod
    def coerce_list(cls, metrics: Sequence[MetricConfig | dict[str, Any]]) -> list[MetricConfig]:
        """Accept a list of configs or of their `to_dict()` forms; a single config or a string is refused.

        Examples:
            >>> [m.name for m in MetricConfig.coerce_list([{"name": "acc", "metric_class": "Accuracy"}])]
            ['acc']
        """
        entries = check_list("metrics", metrics, of="MetricConfig (or their dict forms)")
        return [cls.coerce(m) for m in entries]


def create_metrics(
    configs: Sequence[MetricConfig], stage: str, num_classes: int | None = None, task: str | None = None
) -> nn.ModuleDict:
    """Build the metrics of one stage as a `ModuleDict` keyed by metric name.

    Examples:
        >>> metrics = [MetricConfig("accuracy", metric_class="Accuracy", stages=["val"])]
        >>> list(create_metrics(metrics, "val", num_classes=3, task="multiclass"))
        ['accuracy']
    """
    check_choice("stage", stage, STAGES)
    configs = check_list("configs", configs, of="MetricConfig")
    for config in configs:
        if not isinstance(config, MetricConfig):
            raise TypeError(f"Expected each entry of `configs` to be a MetricConfig, but got {config!r}.")
    names = [c.name for c in configs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Metric names must be unique, but {duplicates} appear more than once.")
    return nn.ModuleDict({c.name: c.create(num_classes, task) for c in configs if stage in c.stages})


build_metrics = deprecated_alias(create_metrics, "build_metrics")


def _import_custom(metric_class: str | type) -> type:
    expected = (
        "Expected `metric_class` to be a torchmetrics.Metric subclass or its import path 'package.module.Class' "
        "(backend='custom')"
    )
    if isinstance(metric_class, type):
        cls = metric_class
    elif not isinstance(metric_class, str):
        raise TypeError(f"{expected}, but got {type(metric_class).__name__} {metric_class!r}.")
    else:
        module_name, _, attr = metric_class.rpartition(".")
        if not module_name:
            raise ValueError(f"{expected}, but got {metric_class!r}.")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"Could not import `metric_class` {metric_class!r} (backend='custom'): {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, torchmetrics.Metric)):
        raise TypeError(f"{expected}, but got {type(cls).__name__} {cls!r}.")
    return cls
