"""Export a classifier to ONNX or TorchScript, checked by running the exported file.

Both exporters run the model in eval mode on the CPU (its previous mode and device are
restored afterwards), feed it a random batch of the size its data config says, write the
file atomically (a failed export or a failed check leaves an existing file as it was), and
with `check=True` load the written file (ONNX Runtime or `torch.jit.load`), run it on a
fresh random batch of another batch size and compare with the PyTorch model's output.

Deployment metadata travels with the file: class names, normalisation mean and std, input
size, resize settings and the output activation; as JSON strings in the ONNX model's
`metadata_props`, and as the extra file `metadata.json` in a TorchScript archive.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn

from autotimm._atomic import atomic_path
from autotimm._compat import attached_trainer
from autotimm._errors import check_bool, check_choice, check_image_size, check_number
from autotimm._version import __version__
from autotimm.data import resolve_data_config

__all__ = ["METADATA_FILE", "ExportCheckError", "TorchScriptMethod", "export_onnx", "export_torchscript"]

log = logging.getLogger(__name__)

TorchScriptMethod = Literal["trace", "script"]
_METHODS = ("trace", "script")

#: Name of the metadata entry inside a TorchScript archive (`torch.jit.load(path, _extra_files=...)`).
METADATA_FILE = "metadata.json"

# torch.export specialises batch sizes 0 and 1: a batch of 2 keeps the batch axis symbolic,
# and the check runs a batch of another size (3) through it.
_EXAMPLE_BATCH = 2
_CHECK_BATCH = 3
_ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
_INPUT_NAME = "input"
_OUTPUT_NAME = "logits"


class ExportCheckError(RuntimeError):
    """The exported model's output differs from the PyTorch model's beyond the tolerance.

    Attributes:
        check: The figures of a detector's check (a `DetectionCheck`), else `None`.
    """

    check: Any = None


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    opset_version: int | None = None,
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Path:
    """Export an image classifier to a single ONNX file with torch's dynamo exporter.

    The graph takes `input` (`[B, C, H, W]`, normalised as the metadata says) and returns
    `logits` (`[B, num_classes]`). Weights are stored inside the file (models up to 2 GB).

    Args:
        model: An `ImageClassifier`, or any module mapping a normalised image batch to logits;
            its `data_config` (timm's) gives the input size and normalisation when it has one, and
            what its `inference_module()` returns is exported when it has that method.
        path: The file to write; an existing file is replaced only once the export succeeded.
        image_size: Height and width of the input (an int for square images). `None` takes
            the size the model was trained at: from the attached data module, else from the
            model's `trained_data_config` (kept in its checkpoints), else `model.data_config`.
        class_names: Class names in label order, stored in the metadata; `None` takes them
            from the attached data module, else from `model.class_names` (kept in checkpoints).
        dynamic_batch: Make the batch axis symbolic; `False` fixes it to `batch_size`.
        batch_size: The fixed batch size when `dynamic_batch=False`.
        opset_version: ONNX opset to target; `None` takes torch's default.
        check: Run the written file with ONNX Runtime and compare with the PyTorch model.
        atol: Absolute tolerance of the check.
        rtol: Relative tolerance of the check (times the PyTorch output's magnitude).

    Returns:
        The path written.

    Raises:
        ModuleNotFoundError: If `onnx`, `onnxscript` or `onnxruntime` is missing.
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range, `class_names` does not match the model's
            outputs, or the model does not run on an input of the resolved size.
        ExportCheckError: If the exported model's output differs beyond the tolerance.

    Examples:
        >>> from autotimm import BackboneConfig, ImageClassifier
        >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
        >>> export_onnx(model, "model.onnx", image_size=32, class_names=["cat", "dog", "fox"])  # doctest: +SKIP
        PosixPath('model.onnx')
    """
    onnx = import_onnx_modules()[0]
    path = check_export_path(path)
    check_bool("dynamic_batch", dynamic_batch)
    check_bool("check", check)
    check_number("batch_size", batch_size, low=1, integer=True)
    if opset_version is not None:
        check_number("opset_version", opset_version, low=7, high=onnx.defs.onnx_opset_version(), high_inclusive=True)
        opset_version = int(opset_version)
    _check_tolerances(atol, rtol)
    data_config = _data_config(model, image_size)
    example_batch = _EXAMPLE_BATCH if dynamic_batch else int(batch_size)
    check_batch = _CHECK_BATCH if dynamic_batch else int(batch_size)

    with export_mode(model) as dtype:
        example = _random_batch(example_batch, data_config, dtype, seed=0)
        metadata = _metadata(model, data_config, class_names, _run(model, example, data_config))
        dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
        program = torch.onnx.export(
            _inference_module(model),
            (example,),
            input_names=[_INPUT_NAME],
            output_names=[_OUTPUT_NAME],
            opset_version=opset_version,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
        proto = program.model_proto
        produced = next((op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")), None)
        if opset_version is not None and produced != opset_version:
            raise ValueError(
                f"Expected the ONNX model to use `opset_version={opset_version}`, but torch's exporter produced "
                f"opset {produced}. Pick an opset torch can target, or `opset_version=None` for its default."
            )
        onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})

        # Checked before it replaces `path`: a failed or killed export leaves an existing file as it was.
        with atomic_path(path, durable=True) as tmp:
            onnx.save_model(proto, str(tmp))
            if check:
                batch = _random_batch(check_batch, data_config, dtype, seed=1)
                _compare("ONNX", _onnx_runner(tmp), model, batch, atol, rtol)
    log.info("Exported %s to ONNX: %s", type(model).__name__, path)
    return path


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] | None = None,
    class_names: Sequence[str] | None = None,
    method: TorchScriptMethod = "trace",
    check: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> Path:
    """Export an image classifier to a TorchScript archive, with its metadata as `metadata.json`.

    TorchScript is deprecated in PyTorch (torch warns when tracing or scripting); prefer
    ONNX for new deployments. A traced classifier accepts any batch size.

    Args:
        model: An `ImageClassifier`, or any module mapping a normalised image batch to logits.
        path: The file to write; an existing file is replaced only once the export succeeded.
        image_size: Height and width of the example input; `None` reads the data config as
            `export_onnx` does.
        class_names: Class names in label order, stored in the metadata; `None` takes them
            as `export_onnx` does.
        method: `"trace"` (record the operations run on an example batch) or `"script"`
            (compile the Python code, keeping control flow).
        check: Load the written file with `torch.jit.load` and compare with the PyTorch model
            on a batch of another size.
        atol: Absolute tolerance of the check.
        rtol: Relative tolerance of the check (times the PyTorch output's magnitude).

    Returns:
        The path written.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or `method` is unknown.
        RuntimeError: If the model cannot be scripted (`method="script"`).
        ExportCheckError: If the exported model's output differs beyond the tolerance.

    Examples:
        >>> from autotimm import BackboneConfig, ImageClassifier
        >>> model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
        >>> path = export_torchscript(model, "model.pt", image_size=32)  # doctest: +SKIP
        >>> extra = {METADATA_FILE: ""}  # doctest: +SKIP
        >>> scripted = torch.jit.load(path, _extra_files=extra)  # doctest: +SKIP
        >>> json.loads(extra[METADATA_FILE])["input_size"]  # doctest: +SKIP
        [3, 32, 32]
    """
    path = check_export_path(path)
    check_choice("method", method, _METHODS)
    check_bool("check", check)
    _check_tolerances(atol, rtol)
    data_config = _data_config(model, image_size)

    with export_mode(model) as dtype:
        example = _random_batch(_EXAMPLE_BATCH, data_config, dtype, seed=0)
        metadata = _metadata(model, data_config, class_names, _run(model, example, data_config))
        module = _inference_module(model)
        if method == "trace":
            with torch.no_grad():
                # `check` below runs the saved file on another batch size, which says more than
                # torch's own re-trace check (`check_trace`) and costs less.
                scripted = torch.jit.trace(module, (example,), check_trace=False)
        else:
            try:
                scripted = torch.jit.script(module)
            except Exception as e:  # torch raises several types; all mean "not scriptable"
                raise RuntimeError(
                    f"TorchScript cannot script {type(module).__name__}: {e}. Use `method='trace'` instead."
                ) from e

        with atomic_path(path, durable=True) as tmp:  # checked before it replaces `path`, as above
            torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
            if check:
                loaded = torch.jit.load(str(tmp), map_location="cpu")
                batch = _random_batch(_CHECK_BATCH, data_config, dtype, seed=1)
                _compare("TorchScript", loaded, model, batch, atol, rtol)
    log.info("Exported %s to TorchScript (%s): %s", type(model).__name__, method, path)
    return path


# ---- arguments ---------------------------------------------------------------------------
def import_onnx_modules() -> list[Any]:
    """Import onnx, onnxscript and onnxruntime, or say which `pip install` provides them."""
    modules = []
    for name in _ONNX_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as e:
            raise ModuleNotFoundError(
                f"ONNX export needs {', '.join(_ONNX_MODULES)}, but `{name}` cannot be imported ({e}). "
                f"Install them with `pip install {' '.join(_ONNX_MODULES)}` (or "
                "`pip install -e '.[export]'` in a clone of autotimm).",
                name=name,
            ) from e
    return modules


def check_export_path(path: object) -> Path:
    """`path` as a `Path` to write an export to; a `TypeError` or `ValueError` (a folder) naming it otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"Expected `path` to be a str or os.PathLike, but got {type(path).__name__} {path!r}.")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Expected `path` to be a file path, but got the directory '{path}'.")
    return path


def _check_tolerances(atol: object, rtol: object) -> None:
    check_number("atol", atol, low=0)
    check_number("rtol", rtol, low=0)


def _data_config(model: nn.Module, image_size: int | tuple[int, int] | None) -> dict[str, Any]:
    """The data config the model was trained with, resized to `image_size` when given.

    Priority: the attached data module's config (it holds the training `image_size`), then
    the one the model was trained with (`trained_data_config`, kept in its checkpoints), then
    `model.data_config`, then timm's ImageNet defaults.
    """
    size = None if image_size is None else check_image_size(image_size)
    datamodule = getattr(attached_trainer(model), "datamodule", None)
    sources = (getattr(datamodule, "data_config", None), *(getattr(model, a, None) for a in _DATA_CONFIGS))
    source = next((s for s in sources if isinstance(s, Mapping)), None)
    return resolve_data_config(source, size)


_DATA_CONFIGS = ("trained_data_config", "data_config")


def resolve_class_names(model: nn.Module, class_names: Sequence[str] | None, num_outputs: int) -> list[str] | None:
    """`class_names` checked against `num_outputs`; `None` takes the attached data module's, else the model's."""
    if class_names is None:
        datamodule = getattr(attached_trainer(model), "datamodule", None)
        class_names = getattr(datamodule, "class_names", None) or getattr(model, "class_names", None)
        if class_names is None:
            return None
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError(f"Expected `class_names` to be a list of str, but got {class_names!r}.")
    names = list(class_names)
    if len(names) != num_outputs:
        raise ValueError(
            f"Expected `class_names` to hold one name per model output ({num_outputs}), but got {len(names)}: {names}."
        )
    return names


# ---- running the model -------------------------------------------------------------------
@contextlib.contextmanager
def export_mode(model: nn.Module) -> Iterator[torch.dtype]:
    """Put `model` in eval mode on the CPU; yield its floating dtype; restore modes and device after."""
    modes = {module: module.training for module in model.modules()}
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    model.eval().to("cpu")
    try:
        yield dtype
    finally:
        model.to(device)
        for module, training in modes.items():
            module.training = training


def _inference_module(model: nn.Module) -> nn.Module:
    """The plain module that computes `model(x)`: what `model.inference_module()` returns when the
    model has that method (an `ImageClassifier` without its Lightning parts, which TorchScript
    cannot compile); any other module as it is. The check compares the export with `model(x)`
    itself, so the two cannot drift apart unnoticed."""
    inference_module = getattr(model, "inference_module", None)
    return inference_module().eval() if callable(inference_module) else model


def _random_batch(batch: int, data_config: Mapping[str, Any], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A normal random batch from a private generator (the global RNG is left alone)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *data_config["input_size"], generator=generator).to(dtype)


def _run(model: nn.Module, x: torch.Tensor, data_config: Mapping[str, Any]) -> torch.Tensor:
    """`model(x)`, or a `ValueError` saying the input size does not suit the model."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # any failure here means the example input does not fit the model
        raise ValueError(
            f"The model does not run on an input of shape {tuple(x.shape)} (`input_size` "
            f"{tuple(data_config['input_size'])} from its data config): {type(e).__name__}: {e}. "
            "Pass `image_size=` the size the model was trained at."
        ) from e
    if not (isinstance(out, torch.Tensor) and out.ndim == 2):
        raise ValueError(
            f"Expected the model to return logits of shape [batch, num_classes], but it returned "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}."
        )
    return out


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {_INPUT_NAME: x.numpy()})[0])


def _compare(
    kind: str,
    exported: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    x: torch.Tensor,
    atol: float,
    rtol: float,
) -> None:
    """Raise `ExportCheckError` unless `exported(x)` matches `model(x)` within the tolerance."""
    with torch.no_grad():
        expected = model(x).float()
        got = exported(x).float()
    if got.shape != expected.shape:
        raise ExportCheckError(
            f"The {kind} model returned shape {tuple(got.shape)} on a batch of shape {tuple(x.shape)}, "
            f"but the PyTorch model returned {tuple(expected.shape)}. The file was not written."
        )
    diff = (got - expected).abs()
    max_diff = diff.max().item()
    if not bool((diff <= atol + rtol * expected.abs()).all()):
        raise ExportCheckError(
            f"The {kind} model's output differs from the PyTorch model's by up to {max_diff:.3g} (max abs "
            f"difference) on a random batch of shape {tuple(x.shape)}; allowed: atol={atol} + rtol={rtol} x "
            "|output|. The file was not written."
        )
    log.info("%s check passed: max abs difference %.3g on a batch of shape %s", kind, max_diff, tuple(x.shape))


# ---- metadata and writing ----------------------------------------------------------------
def _metadata(
    model: nn.Module,
    data_config: Mapping[str, Any],
    class_names: Sequence[str] | None,
    logits: torch.Tensor,
) -> dict[str, Any]:
    """What a deployer needs to feed the model and read its output."""
    num_outputs = int(logits.shape[1])
    metadata: dict[str, Any] = {
        "input_size": list(data_config["input_size"]),
        "mean": list(data_config["mean"]),
        "std": list(data_config["std"]),
        "interpolation": data_config["interpolation"],
        "crop_pct": data_config["crop_pct"],
        "crop_mode": data_config["crop_mode"],
        "task": "classification",
        "num_classes": num_outputs,
        "output": "logits",
        "autotimm_version": __version__,
    }
    names = resolve_class_names(model, class_names, num_outputs)
    if names is not None:
        metadata["class_names"] = names
    multi_label = getattr(model, "multi_label", None)
    if isinstance(multi_label, bool):
        metadata["activation"] = "sigmoid" if multi_label else "softmax"
    hparams = getattr(model, "hparams", None)
    backbone = hparams.get("backbone") if isinstance(hparams, Mapping) else None
    if isinstance(backbone, Mapping) and isinstance(backbone.get("model_name"), str):
        metadata["backbone"] = backbone["model_name"]
    return metadata
