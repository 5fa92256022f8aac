"""Backbones: configuration, creation and discovery over timm's model registry."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
import torch.nn as nn

from autotimm._errors import check_mapping, check_number, coerce_config, unknown_choice

__all__ = ["BackboneConfig", "PretrainedWeightsError", "create_backbone", "list_backbones", "pooled_width"]

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0
# The largest side `pooled_width` feeds a model that takes any input size.
_PROBE_SIZE = 224
# `timm.create_model` arguments that have their own `BackboneConfig` field.
_OWN_FIELDS = ("model_name", "pretrained", "drop_rate", "drop_path_rate")
# Set while a model is rebuilt from a checkpoint: its weights come from the checkpoint.
_skip_pretrained: contextvars.ContextVar[bool] = contextvars.ContextVar("autotimm_skip_pretrained", default=False)


class PretrainedWeightsError(RuntimeError):
    """Raised when pretrained weights are asked for but cannot be downloaded or found."""


@dataclass
class BackboneConfig:
    """How to build a timm backbone.

    Args:
        model_name: Any timm model name, tags included (`"resnet50"`, `"resnet50.a1_in1k"`).
        pretrained: `True` downloads timm's weights (or uses the local cache), `False` starts
            from random weights, and a path (`"weights.safetensors"`, `"model.pth"`) loads a
            local weights file. The file is not needed to rebuild a model from an autotimm
            checkpoint (`load_from_checkpoint`), which holds the weights.
        drop_rate: Dropout before the classifier inside the backbone.
        drop_path_rate: Stochastic depth rate, for models that support it.
        kwargs: Further keyword arguments for `timm.create_model`.

    Examples:
        >>> cfg = BackboneConfig("resnet18", pretrained=False, drop_path_rate=0.1)
        >>> cfg.model_name
        'resnet18'
    """

    model_name: str
    pretrained: bool | str = True
    drop_rate: float = 0.0
    drop_path_rate: float | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str):
            raise TypeError(
                f"Expected `model_name` to be a timm model name, but got {type(self.model_name).__name__} "
                f"{self.model_name!r}."
            )
        if not self.model_name:
            raise ValueError(f"Expected `model_name` to be a timm model name, but got {self.model_name!r}.")
        if not timm.is_model(self.model_name):
            raise unknown_choice("backbone", self.model_name, timm.list_models())
        if not isinstance(self.pretrained, (bool, str, os.PathLike)):
            raise TypeError(
                f"Expected `pretrained` to be True, False or a path, but got {type(self.pretrained).__name__} "
                f"{self.pretrained!r}."
            )
        if isinstance(self.pretrained, (str, os.PathLike)):
            self.pretrained = str(self.pretrained)
            # Rebuilding from a checkpoint never reads the file: the checkpoint holds the weights.
            if not _skip_pretrained.get() and not Path(self.pretrained).is_file():
                raise FileNotFoundError(
                    f"`pretrained` names a weights file that does not exist: {self.pretrained!r}. "
                    "Pass `pretrained=True` to download timm's weights or `pretrained=False` for random ones."
                )
        check_number("drop_rate", self.drop_rate, low=0, high=1)
        if self.drop_path_rate is not None:
            check_number("drop_path_rate", self.drop_path_rate, low=0, high=1)
        self.kwargs = check_mapping("kwargs", self.kwargs)
        for key in _OWN_FIELDS:
            if key in self.kwargs:
                raise ValueError(
                    f"`{key}` cannot be given in `kwargs`: it is a BackboneConfig field; pass "
                    f"`BackboneConfig(..., {key}=...)` instead."
                )

    @classmethod
    def coerce(cls, backbone: str | BackboneConfig | dict[str, Any]) -> BackboneConfig:
        """Accept a model name, a config, or a config's `to_dict()` form."""
        if isinstance(backbone, str):
            return cls(backbone)
        return coerce_config(cls, "backbone", backbone, "`backbone` to be a timm model name or a BackboneConfig")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, safe for YAML; `BackboneConfig.coerce` rebuilds the same config from it."""
        return asdict(self)

    def to_hparams(self) -> dict[str, Any]:
        """The form a task saves in its checkpoint's hyperparameters.

        As `to_dict()`, but a weights file path is cut down to the file name: the
        checkpoint holds the weights, so the file is never read again, and a full path
        would write the user's folder names (often their user name) into the checkpoint.

        Examples:
            >>> cfg = BackboneConfig("resnet18", pretrained=False)
            >>> cfg.to_hparams()["pretrained"]
            False
        """
        out = self.to_dict()
        if isinstance(self.pretrained, str):
            out["pretrained"] = Path(self.pretrained).name
        return out


@contextlib.contextmanager
def skip_pretrained_download() -> Iterator[None]:
    """Build backbones with random weights inside this block (the caller loads weights itself)."""
    token = _skip_pretrained.set(True)
    try:
        yield
    finally:
        _skip_pretrained.reset(token)


def create_backbone(config: BackboneConfig, **overrides: Any) -> nn.Module:
    """Create the timm model that `config` describes.

    Args:
        config: The backbone configuration.
        overrides: Keyword arguments for `timm.create_model` that the task fixes
            (e.g. `num_classes=0`, `features_only=True`).

    Raises:
        PretrainedWeightsError: when `pretrained=True` and the weights can neither be
            downloaded nor found in the local cache.

    Examples:
        >>> model = create_backbone(BackboneConfig("resnet18", pretrained=False), num_classes=0)
        >>> model.num_features
        512
    """
    kwargs: dict[str, Any] = {"drop_rate": config.drop_rate, **config.kwargs, **overrides}
    if config.drop_path_rate is not None:
        kwargs["drop_path_rate"] = config.drop_path_rate
    pretrained = config.pretrained
    if _skip_pretrained.get():
        pretrained = False
    if isinstance(pretrained, str):
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
        pretrained = True
    elif pretrained:
        local_file = _offline_weights_file(config.model_name)
        if local_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": local_file}
    try:
        return timm.create_model(config.model_name, pretrained=bool(pretrained), **kwargs)
    except (OSError, ConnectionError) as e:
        if not pretrained:
            raise
        raise PretrainedWeightsError(_no_weights_message(config.model_name, str(e))) from e


def pooled_width(model: nn.Module, input_size: Sequence[int]) -> int:
    """The width of the pooled features that `model`, built with `num_classes=0`, returns.

    Measured with one forward pass of a blank image in eval mode without gradients (the
    training mode is restored), not read from `num_features`: models with a pre-logits head
    (MobileNetV3, MobileNetV4, GhostNet, LCNet, HGNetV2, ...) widen the pooled features
    further (`mobilenetv3_small_100`: 576 channels, 1024 features). A model whose pretrained
    config does not fix its input size is measured at no more than 224 px (nor less than its
    `min_input_size`), which keeps the pass cheap for models made for large images.

    Args:
        model: A timm model built with `num_classes=0`.
        input_size: The `(channels, height, width)` the model takes, e.g. its data config's `input_size`.

    Raises:
        ValueError: If the model does not return pooled features `[batch, width]` (for instance when
            built with `global_pool=""`).

    Examples:
        >>> model = create_backbone(BackboneConfig("mobilenetv3_small_100", pretrained=False), num_classes=0)
        >>> model.num_features, pooled_width(model, (3, 64, 64))
        (576, 1024)
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    channels, *size = input_size
    if not cfg.get("fixed_input_size"):
        smallest = (cfg.get("min_input_size") or (channels, 0, 0))[1:]
        size = [max(min(s, _PROBE_SIZE), low) for s, low in zip(size, smallest, strict=True)]
    param = next(model.parameters(), torch.empty(0))
    dtype = param.dtype if param.is_floating_point() else None
    blank = torch.zeros(1, channels, *size, device=param.device, dtype=dtype)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(blank)
    finally:
        model.train(training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        name = cfg.get("architecture", type(model).__name__)
        raise ValueError(
            f"Expected backbone {name!r} to return pooled features [batch, width], but got {got}. "
            "Leave `global_pool` and `features_only` out of the BackboneConfig kwargs of a classifier."
        )
    return int(out.shape[1])


def list_backbones(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """List timm model names, optionally filtered by a wildcard `pattern`.

    Args:
        pattern: A shell-style pattern such as `"*resnet*"` or `"convnext*"`.
        pretrained: Only names that have pretrained weights (listed with their tags).

    Examples:
        >>> "resnet18" in list_backbones("resnet1*")
        True
    """
    return timm.list_models(pattern or "", pretrained=pretrained)


def _offline_weights_file(model_name: str) -> str | None:
    """Return a cached weights file when the weights' host cannot be reached.

    Raises `PretrainedWeightsError` at once when the host is unreachable and nothing is
    cached, instead of letting the hub client retry for a minute. Returns `None` when the
    host is reachable (timm downloads as usual) or when this cannot be decided.
    """
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or cfg.file:
        return None
    hosts = []
    if cfg.hf_hub_id:
        hosts.append(urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname)
    if cfg.url:
        hosts.append(urlparse(cfg.url).hostname)
    if not hosts or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline and any(_reachable(h) for h in hosts if h):
        return None
    cached = _cached_weights(cfg)
    if cached is None:
        raise PretrainedWeightsError(
            _no_weights_message(model_name, f"cannot reach {', '.join(h for h in hosts if h)}")
        )
    log.info("Offline: loading %s weights from the local cache %s", model_name, cached)
    return cached


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached_weights(cfg: Any) -> str | None:
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for name in names:
            path = try_to_load_from_cache(repo_id, name, revision=revision or None)
            if isinstance(path, str):
                return path
    if cfg.url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if path.is_file():
            return str(path)
    return None


def _no_weights_message(model_name: str, reason: str) -> str:
    return (
        f"Pretrained weights for backbone {model_name!r} could not be downloaded ({reason}) and are not in "
        "the local cache. Either train from random weights with `pretrained=False`, or point to a local "
        f"weights file: `BackboneConfig({model_name!r}, pretrained='path/to/weights.safetensors')`."
    )
