"""Load a trained task for inference (`load`) from a checkpoint, a run folder or a `save_pretrained` folder.

`load` reads which task a checkpoint holds (autotimm writes it into each checkpoint; older ones are
recognised by their hyperparameters), rebuilds it without downloading pretrained weights, and
returns it in eval mode on the best device, with its class names and eval preprocessing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version

from autotimm._errors import closest
from autotimm._version import __version__
from autotimm.backbones import skip_pretrained_download
from autotimm.inference import OnnxPredictor
from autotimm.tasks.base import PRETRAINED_CONFIG, PRETRAINED_KEY, BaseTask, checkpoint_task
from autotimm.tasks.classification import ImageClassifier
from autotimm.tasks.detection import ObjectDetector

__all__ = ["TASKS", "best_device", "load", "run_checkpoint"]

log = logging.getLogger(__name__)

#: The tasks `load` rebuilds, by class name.
TASKS: dict[str, type[BaseTask]] = {"ImageClassifier": ImageClassifier, "ObjectDetector": ObjectDetector}
_CHECKPOINT_KEY = "autotimm"


def best_device() -> torch.device:
    """CUDA when there is a GPU, else Apple's MPS when there is one, else the CPU.

    Examples:
        >>> best_device().type in ("cuda", "mps", "cpu")
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load(path: str | os.PathLike[str], device: str | torch.device | None = None) -> BaseTask | OnnxPredictor:
    """Load a trained model for inference: from a checkpoint, a run folder or a `save_pretrained` folder.

    Nothing is downloaded (the pretrained backbone weights the model started from are not
    fetched: the file holds the trained weights), and no data is needed: the class names and
    the eval preprocessing come from the file. `model.predict(...)` is then ready to run.

    Args:
        path: A `.ckpt` file; a folder written by `model.save_pretrained`; a run folder, whose best
            checkpoint is taken (`checkpoints/best.ckpt`, else the best one its `run.json` names, else
            its last one); or an `.onnx` file written by `to_onnx`, opened as an `OnnxPredictor`
            (ONNX Runtime, no PyTorch model) with the same `predict`.
        device: Where to put the model; `None` takes the best one there is (see `best_device`).

    Returns:
        The task (`ImageClassifier`, `ObjectDetector`) in eval mode on `device`; for an `.onnx` file,
        an `OnnxPredictor` (on the CPU, or CUDA with `device="cuda"`).

    Raises:
        FileNotFoundError: If `path` does not exist, or a run folder holds no checkpoint.
        ValueError: If the file is not an autotimm checkpoint, model folder or ONNX export (the message names it).

    Examples:
        >>> model = autotimm.load("runs/20260105-101500-3fa2c1")  # doctest: +SKIP
        >>> model.predict("new_images/").to_csv("results.csv")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() == ".onnx" and path.is_file():
        cuda = device is not None and torch.device(device).type == "cuda"
        return OnnxPredictor(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else None)
    if path.is_dir():
        if (path / PRETRAINED_CONFIG).is_file():
            model = _load_folder(path)
        else:
            model = _load_checkpoint(run_checkpoint(path))
    elif path.is_file():
        model = _load_checkpoint(path)
    else:
        raise FileNotFoundError(f"No such checkpoint file or model folder: {str(path)!r}.")
    model.eval()
    return model.to(best_device() if device is None else torch.device(device))


def run_checkpoint(run_dir: str | os.PathLike[str]) -> Path:
    """The checkpoint `load` takes from a run folder: its best one, else its last one.

    Looks, in order, for `checkpoints/best.ckpt`, the best checkpoint named in `run.json`,
    `checkpoints/last.ckpt`, the last checkpoint named in `run.json`, and the one `.ckpt` file of
    the folder or its `checkpoints/`.

    Raises:
        FileNotFoundError: If none of these exists, or the folder holds several other checkpoints
            (the message lists them).

    Examples:
        >>> run_checkpoint("runs/20260105-101500-3fa2c1")  # doctest: +SKIP
        PosixPath('runs/20260105-101500-3fa2c1/checkpoints/best.ckpt')
    """
    folder = Path(run_dir)
    recorded = _recorded_checkpoints(folder)
    candidates = [
        folder / "checkpoints" / "best.ckpt",
        *recorded.get("best", []),
        folder / "checkpoints" / "last.ckpt",
        *recorded.get("last", []),
    ]
    found = next((p for p in candidates if p.is_file()), None)
    if found is not None:
        return found
    others = sorted([*folder.glob("*.ckpt"), *folder.glob("checkpoints/*.ckpt")])
    if len(others) == 1:
        return others[0]
    if others:
        raise FileNotFoundError(
            f"The folder {str(folder)!r} holds {len(others)} checkpoints and no best.ckpt: "
            f"{', '.join(str(p) for p in others)}. Pass the one to load."
        )
    raise FileNotFoundError(
        f"No checkpoint in {str(folder)!r}: looked for checkpoints/best.ckpt, checkpoints/last.ckpt, the checkpoints "
        f"its run.json names and any .ckpt file, and for a {PRETRAINED_CONFIG} of `save_pretrained`."
    )


def _recorded_checkpoints(folder: Path) -> dict[str, list[Path]]:
    """The checkpoints `run.json` names, by kind; a relative path is tried from the working folder and the run's."""
    try:
        named = json.loads((folder / "run.json").read_text(encoding="utf-8"))["checkpoints"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(named, Mapping):
        return {}
    return {kind: [Path(value), folder / value] for kind, value in named.items() if isinstance(value, str) and value}


def _load_checkpoint(path: Path) -> BaseTask:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 (any failure: not a checkpoint torch can read)
        raise ValueError(f"Could not read {str(path)!r} as a checkpoint ({type(error).__name__}: {error}).") from error
    cls = _task_of(checkpoint, path)
    _check_version(checkpoint.get(_CHECKPOINT_KEY) or {}, path)
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=False)


def _task_of(checkpoint: Any, path: Path) -> type[BaseTask]:
    """The task class a checkpoint holds: as autotimm wrote it, else recognised by its hyperparameters."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, Mapping) else None
    if not isinstance(hparams, Mapping):
        raise ValueError(
            f"{str(path)!r} is not a Lightning checkpoint of an autotimm task (it has no hyperparameters)."
        )
    return _task_class(checkpoint_task(checkpoint), path)


def _task_class(name: object, path: Path) -> type[BaseTask]:
    if isinstance(name, str) and name in TASKS:
        return TASKS[name]
    matches = closest(str(name), list(TASKS))
    hint = f" Did you mean {matches[0]!r}?" if matches else ""
    raise ValueError(
        f"{str(path)!r} holds a model of task {name!r}, which `autotimm.load` cannot rebuild; it loads "
        f"{sorted(TASKS)}.{hint}"
    )


def _check_version(saved: Mapping[str, Any], path: Path) -> None:
    """Warn when the file was written by a newer autotimm than this one."""
    written = saved.get("version")
    try:
        newer = isinstance(written, str) and Version(written) > Version(__version__)
    except InvalidVersion:
        newer = False
    if newer:
        log.warning(
            "%s was written by autotimm %s, newer than this autotimm %s; if loading fails, upgrade autotimm.",
            path,
            written,
            __version__,
        )


def _load_folder(folder: Path) -> BaseTask:
    config_path = folder / PRETRAINED_CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{str(config_path)!r} is not valid JSON ({error}).") from error
    saved = config.get(PRETRAINED_KEY) if isinstance(config, Mapping) else None
    if not isinstance(saved, Mapping):
        raise ValueError(
            f"{str(config_path)!r} was not written by autotimm's `save_pretrained` (it has no {PRETRAINED_KEY!r} "
            "entry). A timm model folder loads with `timm.create_model('local-dir:<folder>', pretrained=True)`."
        )
    cls = _task_class(saved.get("task"), folder)
    _check_version(saved, folder)
    with skip_pretrained_download():
        model = cls(**saved["hparams"])
    model.class_names = saved.get("class_names")
    model.trained_data_config = saved.get("data_config")
    model.load_pretrained_weights(folder)
    model._restore_checkpoint_extras(saved)
    return model
