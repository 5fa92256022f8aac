"""The API document's code blocks run as written (offline, on a CPU, on a small real data set).

The document (`shared/seeds/001_085e7e17dbe6182e.txt`, beside the repository root) promises that
every code block in it works as written. Each of its ```python blocks is one test, named by
the nearest heading above it. A block runs statement by statement with `exec` in a namespace
holding what the document assumes exists (see `_namespace`), after the substitutions of
`SUBSTITUTIONS` and nothing else; then a check registered for its heading (`CHECKS`)
asserts what the block is for: a checkpoint written, tuning results, a number of optimizer
steps. Every block runs inside `tmp_path`, so `default_root_dir="."` and `save_dir="logs"`
write there, never into the repository.

Blocks that only build an `AutoTrainer` are also trained here where that is cheap on the
small data; the distributed blocks (DDP, multi-node) are built on the CPU and never
launched.
"""

from __future__ import annotations

import ast
import json
import linecache
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.strategies import DDPStrategy

import autotimm
from autotimm import (
    AutoTrainer,
    BackboneConfig,
    DetectionDataModule,
    ImageClassifier,
    ImageDataModule,
    MetricConfig,
)
from autotimm.data import make_coco_shapes

DOCUMENT = Path(__file__).parents[2] / "shared" / "seeds" / "001_085e7e17dbe6182e.txt"
if not DOCUMENT.is_file():
    pytest.skip(
        f"the API document is not at {DOCUMENT} (CI clones `shared/` beside the repository root)",
        allow_module_level=True,
    )
pytest.importorskip("sklearn", reason="the small digits data set needs scikit-learn")

# A tiny timm model (0.4 M parameters) that trains in milliseconds per batch on a CPU.
TINY_BACKBONE = "test_resnet"
# 10 digits x 10 images: 60 train, 20 val, 20 test images, 32x32 px.
IMAGES_PER_CLASS = 10
# 60 train images in 4 batches: `val_check_interval=0.25` then validates 4 times per epoch, and
# `accumulate_grad_batches=4` makes one optimizer step per epoch.
BATCH_SIZE = 16


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Block:
    """One ```python block of the document, named by the nearest heading above it."""

    heading: str
    source: str
    line: int  # 1-based line of the block's first code line in the document


def parse_blocks(text: str) -> list[Block]:
    """Return the document's ```python blocks in order; headings inside code fences are ignored."""
    blocks: list[Block] = []
    heading, fence, code, start = "(no heading)", None, [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if fence is None:
            if stripped.startswith("```"):
                fence, code, start = stripped[3:].strip().lower(), [], number + 1
            elif re.match(r"#{1,6} ", line):
                heading = line.lstrip("#").strip()
        elif stripped == "```":
            if fence == "python":
                blocks.append(Block(heading, "\n".join(code) + "\n", start))
            fence = None
        else:
            code.append(line)
    assert fence is None, f"unclosed code fence in {DOCUMENT}"
    return blocks


BLOCKS = parse_blocks(DOCUMENT.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- substitutions


@dataclass(frozen=True)
class Substitution:
    """A literal text replacement applied to every block that contains `old`."""

    old: str
    new: str
    reason: str


# The only changes made to the document's code. The names on the right are put into the
# namespace by `_namespace`.
SUBSTITUTIONS: tuple[Substitution, ...] = (
    Substitution(
        'backbone="resnet50"',
        f'backbone=BackboneConfig("{TINY_BACKBONE}", pretrained=False)',
        "offline: no pretrained weights to download; a 0.4 M-parameter timm model trains on a CPU in seconds",
    ),
    Substitution(
        'data_dir="./data"',
        "data_dir=digits_dir",
        "offline: the small digits image folder (10 classes, like CIFAR10) instead of a download",
    ),
    Substitution(
        'data_dir="./coco"',
        "data_dir=coco_dir",
        "offline: a small synthetic COCO set (autotimm.data.make_coco_shapes) instead of COCO",
    ),
    Substitution(
        'dataset_name="CIFAR10"',
        "dataset_name=None",
        "with the digits folder: `None` means an image folder, so nothing is downloaded",
    ),
    Substitution("image_size=224", "image_size=32", "CPU-sized: the digits are 32x32 px"),
    Substitution("image_size=640", "image_size=64", "CPU-sized: the synthetic COCO images are 64x64 px"),
    Substitution(
        "num_classes=80",
        "num_classes=3",
        "the synthetic COCO set has 3 categories (the detector takes its image size from the data module)",
    ),
    Substitution(
        'backbone="swin_tiny_patch4_window7_224"',
        'backbone=BackboneConfig("swin_tiny_patch4_window7_224", pretrained=False)',
        "offline: the document's Swin backbone itself, without downloading pretrained weights",
    ),
    Substitution("max_epochs=12", "max_epochs=2", "CPU budget: 2 of the 12 detection epochs"),
    Substitution("num_workers=8", "num_workers=0", "2 CPU cores: load in the main process, no worker start-up"),
    Substitution(
        'accelerator="gpu"',
        "accelerator=ACCELERATOR",
        'ACCELERATOR is "gpu" when CUDA is available, else "cpu"; always "cpu" in the distributed blocks, '
        "which are only built (never launched), so they need no GPUs",
    ),
    Substitution(
        '"path/to/checkpoint.ckpt"',
        "resume_checkpoint",
        "a real checkpoint, written by an earlier fit of the same model on the same data",
    ),
)


def substitute(source: str) -> tuple[str, list[Substitution]]:
    """Apply `SUBSTITUTIONS`; return the new source and the substitutions that applied."""
    applied = [s for s in SUBSTITUTIONS if s.old in source]
    for sub in applied:
        source = source.replace(sub.old, sub.new)
    return source, applied


# --------------------------------------------------------------------------- running a block


@dataclass
class Run:
    """What running one block left behind."""

    block: Block
    ns: dict[str, Any]
    tmp_path: Path
    # Every distinct object bound to each name, in order (a block may build several trainers).
    history: dict[str, list[Any]] = field(default_factory=dict)
    stdout: str = ""

    def all(self, name: str) -> list[Any]:
        return self.history.get(name, [])

    def last(self, name: str) -> Any:
        assert self.all(name), f"the block bound nothing to {name!r}"
        return self.all(name)[-1]


def exec_block(block: Block, source: str, ns: dict[str, Any], history: dict[str, list[Any]]) -> None:
    """Run `source` one top-level statement at a time, recording what each name is bound to.

    The value of a bare expression statement (`AutoTrainer(...)` alone) is bound to `_`, as
    in the interactive interpreter. The source is registered with `linecache` under a name
    that points at the document, so a traceback shows the failing line of the block.
    """
    filename = f"<{DOCUMENT.name}:{block.line} {block.heading}>"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)
    tree = ast.parse(source, filename)
    tracked = set(ns)
    for statement in tree.body:
        if isinstance(statement, ast.Expr):
            ns["_"] = eval(compile(ast.Expression(statement.value), filename, "eval"), ns)
        else:
            exec(compile(ast.Module([statement], type_ignores=[]), filename, "exec"), ns)
        for name in (*tracked, *(n for n in ns if n not in tracked and not n.startswith("__"))):
            value = ns.get(name)
            seen = history.setdefault(name, [])
            if value is not None and not any(value is v for v in seen):
                seen.append(value)
        tracked |= set(ns)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core machine
    two threads per process contend with the other processes and turn a ~30 ms step into
    seconds. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autotimm.data import make_digits_folder

    return make_digits_folder(
        tmp_path_factory.mktemp("api_doc") / "digits", image_size=32, max_per_class=IMAGES_PER_CLASS
    )


def _metrics() -> list[MetricConfig]:
    """The document's `metrics` (as its Full Training Example defines them)."""
    return [
        MetricConfig(
            name="accuracy",
            backend="torchmetrics",
            metric_class="Accuracy",
            params={"task": "multiclass"},
            stages=["train", "val", "test"],
            prog_bar=True,
        )
    ]


def _model(metrics: list[MetricConfig], num_classes: int) -> ImageClassifier:
    return ImageClassifier(
        backbone=BackboneConfig(TINY_BACKBONE, pretrained=False), num_classes=num_classes, metrics=metrics
    )


def _data(digits_dir: Path) -> ImageDataModule:
    # No augmentation: random crops and flips of 32 px digits hide the loss descent that the
    # learning-rate finder looks for in its few steps (it then fails on about 1 run in 5).
    return ImageDataModule(digits_dir, image_size=32, batch_size=BATCH_SIZE, num_workers=0, augmentation_preset="none")


# The blocks of the document's "Object Detection Training" section, which read `data` and
# `metrics` as its "Standard COCO Training" block defines them.
DETECTION_BLOCKS = (
    "Standard COCO Training",
    "Two-Phase Detection Training (Recommended)",
    "Transformer-Based Detection",
)
# The detection data module's `image_size` (the document's 640 becomes 64); the document sets it on the data
# module only, so the detector takes it from there.
DETECTION_SIZE = 64


def _detection_metrics() -> list[MetricConfig]:
    """The document's detection `metrics` (its "Standard COCO Training" block)."""
    return [
        MetricConfig(
            name="mAP",
            backend="torchmetrics",
            metric_class="MeanAveragePrecision",
            params={"box_format": "xyxy", "iou_type": "bbox"},
            stages=["val", "test"],
            prog_bar=True,
        )
    ]


def _coco_dir(tmp_path: Path) -> Path:
    return make_coco_shapes(tmp_path / "coco", image_size=64, num_train=8, num_val=4)


def _resume_checkpoint(root: Path, digits_dir: Path) -> tuple[Path, int, int]:
    """Write a checkpoint with an earlier fit: 19 epochs of 1 batch each, so that resuming with
    `max_epochs=20` runs one full epoch. Returns the path, its epoch and its global step."""
    model = _model(_metrics(), 10)
    trainer = AutoTrainer(
        max_epochs=19,
        accelerator="cpu",
        default_root_dir=root,
        limit_train_batches=1,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=_data(digits_dir))
    checkpoint = trainer.run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return checkpoint, trainer.current_epoch, trainer.global_step


def _namespace(
    block: Block, source: str, tmp_path: Path, digits_dir: Path, detection_size: int = DETECTION_SIZE
) -> dict[str, Any]:
    """What the document assumes exists when a block starts.

    - every public name of `autotimm` and the module itself (the document imports them in
      earlier blocks and reads top to bottom);
    - `data`: an `ImageDataModule` over the small digits folder;
    - `metrics`: the document's accuracy `MetricConfig` list;
    - `model`: an `ImageClassifier` over the tiny backbone with those metrics;
    - in the detection blocks, `coco_dir` (a small synthetic COCO set, which a substitution
      puts in place of `"./coco"`), and `data` and `metrics` as the document's standard
      detection block defines them;
    - the other names that `SUBSTITUTIONS` introduce.
    """
    ns: dict[str, Any] = {"__name__": "__api_document__", "autotimm": autotimm}
    ns.update({name: getattr(autotimm, name) for name in autotimm.__all__})
    data = _data(digits_dir)
    metrics = _metrics()
    ns.update(data=data, metrics=metrics, model=_model(metrics, data.num_classes), digits_dir=digits_dir)
    distributed = CHECKS.get(block.heading, Check()).distributed
    ns["ACCELERATOR"] = "gpu" if torch.cuda.is_available() and not distributed else "cpu"
    if block.heading in DETECTION_BLOCKS:
        coco_dir = _coco_dir(tmp_path)
        data = DetectionDataModule(coco_dir, image_size=detection_size, batch_size=16, augmentation_preset="default")
        ns.update(coco_dir=coco_dir, data=data, metrics=_detection_metrics())
    if "resume_checkpoint" in source:
        path, epoch, step = _resume_checkpoint(tmp_path / "earlier_run", digits_dir)
        ns.update(resume_checkpoint=str(path), _resume_epoch=epoch, _resume_step=step)
    return ns


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    """What a block must achieve beyond running without error."""

    check: Callable[[Run], None] | None = None
    distributed: bool = False  # build only, on the CPU; never launched


def _finite(value: Any) -> bool:
    return math.isfinite(float(value))


def _fit(run: Run, trainer: pl.Trainer) -> None:
    trainer.fit(run.ns["model"], datamodule=run.ns["data"])


def _batches_per_epoch(run: Run) -> int:
    data = run.ns["data"]
    data.setup("fit")
    return len(data.train_dataloader())


class _ValidationCounter(Callback):
    def __init__(self) -> None:
        self.runs = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.runs += 1


class _GradNorms(Callback):
    """Total gradient norm before clipping (`on_before_optimizer_step`) and after it (at batch end)."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []

    @staticmethod
    def _norm(pl_module: pl.LightningModule) -> float:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.before.append(self._norm(pl_module))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.after.append(self._norm(pl_module))


def check_basic_training(run: Run) -> None:
    trainer = run.last("trainer")
    assert trainer.current_epoch == 10 and trainer.global_step == 10 * _batches_per_epoch(run)
    assert (trainer.run_dir / "checkpoints" / "last.ckpt").is_file()
    assert Path(trainer.ckpt_path).is_file()  # test() evaluated the saved checkpoint
    metrics = trainer.callback_metrics
    assert {"test/accuracy", "test/loss"} <= set(metrics) and _finite(metrics["test/loss"])
    assert 0.0 <= float(metrics["test/accuracy"]) <= 1.0


def check_checkpointing(run: Run) -> None:
    trainer = run.last("trainer")
    _fit(run, trainer)
    best = Path(trainer.checkpoint_callback.best_model_path)
    assert best == trainer.run_dir / "checkpoints" / "best.ckpt" and best.is_file()
    assert trainer.checkpoint_callback.monitor == "val/accuracy" and trainer.checkpoint_callback.mode == "max"
    assert (best.parent / "last.ckpt").is_file()


def check_gpu_training(run: Run) -> None:
    trainer = run.last("trainer")
    expected = CUDAAccelerator if run.ns["ACCELERATOR"] == "gpu" else CPUAccelerator
    assert isinstance(trainer.accelerator, expected) and trainer.num_devices == 1 and trainer.max_epochs == 10


def check_mixed_precision(run: Run) -> None:
    trainer = run.last("trainer")
    assert trainer.precision == "bf16-mixed"
    _fit(run, trainer)
    assert trainer.current_epoch == 10 and _finite(trainer.callback_metrics["train/loss_epoch"])


def check_fast_dev_run(run: Run) -> None:
    one, five = run.all("trainer")
    batches = _batches_per_epoch(run)
    assert one.global_step == 1 and five.global_step == min(5, batches)
    assert "val/loss" in five.callback_metrics  # validation ran too
    assert one.run_dir is None and five.run_dir is None  # a debug run keeps no run folder ...
    assert not list(run.tmp_path.rglob("*.ckpt"))  # ... and writes no checkpoints


def check_tuner_config(run: Run) -> None:
    trainer, model, data = run.last("trainer"), run.ns["model"], run.ns["data"]
    results = trainer.tuning_results
    assert {"lr", "batch_size"} <= set(results)
    assert model._lr == results["lr"] and 1e-6 <= results["lr"] <= 1.0
    assert data.batch_size == results["batch_size"] > 1  # never shrunk to a batch of one (issue 12)
    assert trainer.current_epoch == 10  # training ran after tuning


def check_lr_finding_only(run: Run) -> None:
    trainer = run.last("trainer")
    batch_size = run.ns["data"].batch_size
    _fit(run, trainer)
    results = trainer.tuning_results
    assert "lr" in results and "batch_size" not in results
    assert run.ns["model"]._lr == results["lr"] and run.ns["data"].batch_size == batch_size
    assert trainer.current_epoch == 10


def check_ddp(run: Run) -> None:
    trainer = run.last("trainer")
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_devices == 2 and trainer.world_size == 2
    assert trainer.precision == "bf16-mixed"


def check_multi_node(run: Run) -> None:
    trainer = run.last("trainer")
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.num_nodes == 2 and trainer.world_size == 8


def check_accumulation(run: Run) -> None:
    trainer = run.last("trainer")
    _fit(run, trainer)
    assert trainer.global_step == math.ceil(_batches_per_epoch(run) / 4) * 10


def check_clipping(run: Run) -> None:
    trainer = run.last("trainer")
    assert trainer.gradient_clip_val == 1.0
    norms = _GradNorms()
    trainer.callbacks.append(norms)
    _fit(run, trainer)
    assert trainer.current_epoch == 10 and len(norms.after) == trainer.global_step
    assert max(norms.before) > 1.0, "no gradient was large enough to be clipped: the check proves nothing"
    assert max(norms.after) <= 1.0 + 1e-4


def check_validation_frequency(run: Run) -> None:
    every_epoch, every_500, quarter = run.all("trainer")
    assert every_epoch.val_check_interval == 1.0 and every_epoch.check_val_every_n_epoch == 1
    assert every_500.val_check_interval == 500 and quarter.val_check_interval == 0.25
    # 500 steps is more than this data's epoch (Lightning refuses that at fit): built only.
    assert _batches_per_epoch(run) == 4, "the data is sized for 4 batches per epoch"
    counter = _ValidationCounter()
    quarter.callbacks.append(counter)
    _fit(run, quarter)
    assert counter.runs == 4 * 10  # after each quarter of each of the 10 epochs


def check_callbacks(run: Run) -> None:
    trainer = run.last("trainer")
    assert any(isinstance(c, EarlyStopping) and c.monitor == "val/loss" and c.patience == 10 for c in trainer.callbacks)
    assert any(isinstance(c, LearningRateMonitor) for c in trainer.callbacks)
    assert trainer.max_epochs == 100


def check_resume(run: Run) -> None:
    trainer = run.last("trainer")
    start_epoch, start_step = run.ns["_resume_epoch"], run.ns["_resume_step"]
    assert trainer.ckpt_path == run.ns["resume_checkpoint"]
    # It continued from the checkpoint's epoch, it did not start again from 0.
    assert trainer.current_epoch == 20
    assert trainer.global_step == start_step + (20 - start_epoch) * _batches_per_epoch(run)


def check_full_example(run: Run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, data = run.last("trainer"), run.last("data")
    assert data.data_dir == run.ns["digits_dir"] and data.num_workers == 0
    assert "lr" in trainer.tuning_results
    assert run.last("model")._lr == trainer.tuning_results["lr"]
    best = Path(trainer.checkpoint_callback.best_model_path)
    assert best == trainer.run_dir / "checkpoints" / "best.ckpt" and best.is_file() and trainer.ckpt_path == str(best)
    # Stopped early, or ran its 50 epochs. `test()` reloads the callbacks' state from the best
    # checkpoint, so read EarlyStopping's state from last.ckpt (written after it at each epoch end).
    epochs = trainer.fit_loop.epoch_progress.current.completed
    callback_states = torch.load(best.parent / "last.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    (early_stopping,) = (v for k, v in callback_states.items() if k.startswith("EarlyStopping"))
    assert (0 < early_stopping["stopped_epoch"] == epochs - 1) or epochs == 50
    metrics = trainer.callback_metrics
    assert {"test/accuracy", "test/loss"} <= set(metrics) and _finite(metrics["test/loss"])
    assert trainer.precision == "bf16-mixed"
    # The TensorBoard logger wrote under ./logs, that is inside tmp_path.
    log_dir = (run.tmp_path / trainer.logger.log_dir).resolve()
    assert log_dir.is_relative_to((run.tmp_path / "logs").resolve()) and log_dir.is_dir()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert {"val/accuracy", "val/loss", "train/accuracy"} <= set(events.Tags()["scalars"])


def check_list_optimizers(run: Run) -> None:
    torch_line = next(line for line in run.stdout.splitlines() if line.startswith("PyTorch optimizers:"))
    timm_line = next(line for line in run.stdout.splitlines() if line.startswith("Timm optimizers:"))
    for name in ("adamw", "sgd"):
        assert f"'{name}'" in torch_line
    for name in ("adamp", "lamb"):
        assert f"'{name}'" in timm_line


def check_list_schedulers(run: Run) -> None:
    assert "Timm schedulers:" in run.stdout
    torch_line = next(line for line in run.stdout.splitlines() if line.startswith("PyTorch schedulers:"))
    for name in (
        "cosineannealinglr",
        "cosineannealingwarmrestarts",
        "multisteplr",
        "onecyclelr",
        "reducelronplateau",
        "steplr",
    ):
        assert f"'{name}'" in torch_line


def _first_scheduler_and_optimizer(run: Run, model: ImageClassifier) -> tuple[Any, torch.optim.Optimizer]:
    """Train `model` for one batch (fast_dev_run) and return its scheduler and optimizer."""
    trainer = AutoTrainer(fast_dev_run=True, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=run.ns["data"])
    configs = trainer.lr_scheduler_configs
    return (configs[0].scheduler if configs else None), trainer.optimizers[0]


def check_custom_optimizer(run: Run) -> None:
    _, optimizer = _first_scheduler_and_optimizer(run, run.last("model"))
    assert isinstance(optimizer, torch.optim.AdamW)
    # The block's lr, from which the default schedule (warmup, then cosine) starts.
    assert {g.get("initial_lr", g["lr"]) for g in optimizer.param_groups} == {1e-3}
    assert 1e-4 in {g["weight_decay"] for g in optimizer.param_groups}


def check_custom_schedulers(run: Run) -> None:
    cosine_model, multistep_model = run.all("model")[-2:]
    cosine, _ = _first_scheduler_and_optimizer(run, cosine_model)
    assert isinstance(cosine, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert cosine.T_max == 50 and cosine.eta_min == 1e-6
    multistep, _ = _first_scheduler_and_optimizer(run, multistep_model)
    assert isinstance(multistep, torch.optim.lr_scheduler.MultiStepLR)
    assert sorted(multistep.milestones) == [30, 60, 90] and multistep.gamma == 0.1


def check_parameter_reference(run: Run) -> None:
    trainer = run.last("_")
    assert trainer.max_epochs == 10 and trainer.precision == "32-true" and trainer.logger is None
    assert trainer.tuner_config is None and trainer.checkpoint_monitor is None
    assert any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)


def _check_detector_size(model: Any, data: DetectionDataModule) -> None:
    """The detector works at the data module's size (the document gives the model none) and saves it."""
    assert model.image_size == model.hparams["image_size"] == model.detector.transform.image_size == data.image_size


def _check_best_is_val_map(trainer: Any) -> None:
    """`checkpoints/best.ckpt` of the run folder holds the best val/map, which run.json records."""
    best = Path(trainer.checkpoint_callback.best_model_path)
    assert best.is_file() and best.name == "best.ckpt" and best.parent.parent == Path(trainer.run_dir)
    assert trainer.checkpoint_callback.monitor == "val/map" and trainer.checkpoint_callback.mode == "max"
    recorded = autotimm.runs.Run(trainer.run_dir).best
    assert recorded["monitor"] == "val/map" and Path(recorded["checkpoint"]) == best
    assert recorded["value"] == pytest.approx(float(trainer.checkpoint_callback.best_model_score))


def check_standard_detection(run: Run) -> None:
    trainer, model, data = run.last("trainer"), run.last("model"), run.last("data")
    assert data.data_dir == run.ns["coco_dir"] and model.num_classes == data.num_classes == 3
    _check_detector_size(model, data)
    assert trainer.current_epoch == 2
    metrics = trainer.callback_metrics
    # The document's "mAP" MeanAveragePrecision logs its results under the stage: val/map, val/map_50, ...
    assert {"val/map", "val/map_50", "val/loss", "train/loss_epoch"} <= set(metrics)
    assert 0.0 <= float(metrics["val/map"]) <= 1.0 and _finite(metrics["val/loss"])
    _check_best_is_val_map(trainer)
    assert trainer.gradient_clip_val == 1.0
    # The scheduler is the document's MultiStepLR, stepped per epoch.
    (config,) = trainer.lr_scheduler_configs
    assert type(config.scheduler).__name__ == "MultiStepLR" and config.scheduler.milestones == {8: 1, 11: 1}


def check_two_phase_detection(run: Run) -> None:
    phase1, phase2, model = run.last("trainer_phase1"), run.last("trainer_phase2"), run.last("model")
    assert phase1.current_epoch == 3 and phase2.current_epoch == 2
    assert phase1.optimizers[0].param_groups[0]["lr"] == 1e-3  # head-only phase
    # Phase 2 trains the backbone too, at the lower learning rate set through `model._lr`.
    trained = {id(p) for group in phase2.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in trained for p in model.backbone.parameters())
    assert phase2.optimizers[0].param_groups[0]["lr"] == 1e-4 and not model.backbone_frozen
    _check_detector_size(model, run.ns["data"])
    assert "val/map" in phase2.callback_metrics
    _check_best_is_val_map(phase2)


def check_transformer_detection(run: Run) -> None:
    trainer, model, data = run.last("trainer"), run.last("model"), run.last("data")
    assert trainer.precision == "bf16-mixed" and trainer.gradient_clip_val == 1.0 and data.batch_size == 8
    assert model.hparams["backbone"]["model_name"] == "swin_tiny_patch4_window7_224"
    # The block builds no trainer of its own that runs: validating once attaches the data module, whose size
    # the model takes (Swin, built for one input size, is rebuilt for it).
    AutoTrainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, datamodule=data
    )
    _check_detector_size(model, data)
    # Swin's channels-last maps become the pyramid's strides 8..128, and detection runs end to end.
    assert model.detector.backbone.strides == [8, 16, 32, 64, 128]
    images, _ = next(iter(data.val_dataloader()))
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == len(images)
    for det in detections:
        boxes = det["boxes"]  # in the pixels of the letterboxed images given
        assert boxes.shape[1:] == (4,) and (boxes >= 0).all() and (boxes <= data.image_size).all()


CHECKS: dict[str, Check] = {
    "Basic Training": Check(check_basic_training),
    "With Checkpointing": Check(check_checkpointing),
    "GPU Training": Check(check_gpu_training),
    "Mixed Precision": Check(check_mixed_precision),
    "Fast Development Run": Check(check_fast_dev_run),
    "TunerConfig": Check(check_tuner_config),
    "LR Finding Only": Check(check_lr_finding_only),
    "Data Parallel (DDP)": Check(check_ddp, distributed=True),
    "Multi-Node Training": Check(check_multi_node, distributed=True),
    "Gradient Accumulation": Check(check_accumulation),
    "Gradient Clipping": Check(check_clipping),
    "Validation Frequency": Check(check_validation_frequency),
    "Callbacks": Check(check_callbacks),
    "Resume Training": Check(check_resume),
    "Full Training Example": Check(check_full_example),
    "Available Optimizers": Check(check_list_optimizers),
    "Available Schedulers": Check(check_list_schedulers),
    "Using Custom Optimizers": Check(check_custom_optimizer),
    "Using Custom Schedulers": Check(check_custom_schedulers),
    "Standard COCO Training": Check(check_standard_detection),
    "Two-Phase Detection Training (Recommended)": Check(check_two_phase_detection),
    "Transformer-Based Detection": Check(check_transformer_detection),
    "Full Parameter Reference": Check(check_parameter_reference),
}


def _params() -> list[Any]:
    params, seen = [], {}
    for block in BLOCKS:
        seen[block.heading] = seen.get(block.heading, 0) + 1
        test_id = block.heading if seen[block.heading] == 1 else f"{block.heading}-{seen[block.heading]}"
        params.append(pytest.param(block, id=test_id))
    return params


def run_block(
    block: Block,
    tmp_path: Path,
    digits_dir: Path,
    capsys: pytest.CaptureFixture[str],
    detection_size: int = DETECTION_SIZE,
) -> Run:
    source, _ = substitute(block.source)
    if block.heading in DETECTION_BLOCKS:
        source = source.replace(f"image_size={DETECTION_SIZE}", f"image_size={detection_size}")
    torch.manual_seed(0)  # the same initial weights and batch order in every run
    run = Run(block, _namespace(block, source, tmp_path, digits_dir, detection_size), tmp_path)
    capsys.readouterr()
    exec_block(block, source, run.ns, run.history)
    run.stdout = capsys.readouterr().out
    return run


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("block", _params())
def test_document_block(
    block: Block, tmp_path: Path, digits_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    run = run_block(block, tmp_path, digits_dir, capsys)
    check = CHECKS.get(block.heading, Check()).check
    if check is not None:
        check(run)


@pytest.mark.parametrize("heading", DETECTION_BLOCKS)
def test_detection_block_with_the_data_at_another_size(
    heading: str, tmp_path: Path, digits_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The detection blocks with the data module at 96 px: neither the detector's default (640) nor the 64 px
    above, as a user following the document's tips (512, 800, 1024 px) sets it on the data module only."""
    monkeypatch.chdir(tmp_path)
    (block,) = (b for b in BLOCKS if b.heading == heading)
    run = run_block(block, tmp_path, digits_dir, capsys, detection_size=96)
    assert run.last("data").image_size == 96
    CHECKS[heading].check(run)


def test_callbacks_block_trains(
    tmp_path: Path, digits_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (block,) = (b for b in BLOCKS if b.heading == "Callbacks")
    run = run_block(block, tmp_path, digits_dir, capsys)
    trainer = run.last("trainer")
    # CPU budget: 3 of the block's 100 epochs show that both callbacks work during training.
    trainer.fit_loop.max_epochs = 3
    _fit(run, trainer)
    early_stopping = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    lr_monitor = next(c for c in trainer.callbacks if isinstance(c, LearningRateMonitor))
    assert early_stopping.best_score is not None and _finite(early_stopping.best_score)
    assert trainer.current_epoch == 3 or early_stopping.stopped_epoch > 0
    assert lr_monitor.lrs  # it found the optimizer's learning rate (it logs every `log_every_n_steps`)
    # With the default logger=False, AutoTrainer gave the LearningRateMonitor a CSV logger.
    assert type(trainer.logger).__name__ == "CSVLogger" and Path(trainer.logger.log_dir, "metrics.csv").is_file()


def test_every_check_names_a_block_of_the_document() -> None:
    headings = {b.heading for b in BLOCKS}
    assert set(CHECKS) <= headings, f"checks for headings the document no longer has: {sorted(set(CHECKS) - headings)}"


def test_every_substitution_applies_to_a_block() -> None:
    used = {s.old for b in BLOCKS for s in substitute(b.source)[1]}
    assert {s.old for s in SUBSTITUTIONS} <= used, "a substitution matches no block: remove it or fix its text"


# --------------------------------------------------------------------------- tuning on small data (issue 12)

# 3 classes x 16 training images: with the document's tuner, the batch-size finder grows past the
# whole training set, and the LR finder's 100 steps span many epochs.
SMALL_TRAIN_IMAGES = 48
# On top of `SUBSTITUTIONS`, for the Full Training Example on that folder.
SMALL_DATA_SUBSTITUTIONS: tuple[Substitution, ...] = (
    Substitution("num_classes=10", "num_classes=3", "the small folder has 3 classes"),
    Substitution("auto_batch_size=False", "auto_batch_size=True", "both finders on, as in the TunerConfig block"),
    Substitution("max_epochs=50", "max_epochs=3", "CPU budget: the tuning is what is checked here"),
    Substitution(
        'precision="bf16-mixed"',
        "precision=32",
        "CPU budget: bf16 autocast makes a CPU step ~7x slower; test_document_block runs the block in bf16",
    ),
)


@pytest.mark.parametrize("heading", ["TunerConfig", "Full Training Example"])
def test_tuner_block_with_both_finders_on_48_images(
    heading: str,
    make_image_folder: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from helpers import colour_folder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SUBSTITUTIONS", SUBSTITUTIONS + SMALL_DATA_SUBSTITUTIONS)
    small_dir = colour_folder(make_image_folder, per_class=SMALL_TRAIN_IMAGES // 3, size=32)
    (block,) = (b for b in BLOCKS if b.heading == heading)
    run = run_block(block, tmp_path, small_dir, capsys)  # `data_dir=digits_dir` now names the small folder
    trainer, model, data = run.last("trainer"), run.last("model"), run.last("data")
    assert data.data_dir == small_dir and data.num_classes == 3
    results = trainer.tuning_results
    # The power-mode finder grows the batch past the 48 images (no out-of-memory on a CPU): the run
    # trains with all 48 in one batch, not with a batch shrunk to leave the LR finder more steps.
    assert results["batch_size"] == data.batch_size == SMALL_TRAIN_IMAGES
    # The LR finder's sweep ran its steps (one per epoch here) over as many epochs as they needed, up to its
    # 100 or until the loss diverged at the top of the range, and chose a learning rate.
    curve = json.loads(Path(results["lr_find_curve"]).read_text())
    steps, losses = len(curve["lr"]), [math.inf if v is None else v for v in curve["loss"]]
    assert steps == 100 or (steps >= 50 and losses[-1] > min(losses)), (steps, losses[-5:])
    assert model._lr == results["lr"] == curve["suggestion"]
    assert trainer.current_epoch == trainer.max_epochs and trainer.global_step == trainer.max_epochs
