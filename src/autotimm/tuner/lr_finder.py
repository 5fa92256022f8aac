"""The learning-rate range test: a callback that sweeps the learning rate, and the suggestion read from its curve."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.parsing import lightning_hasattr, lightning_setattr

from autotimm._errors import check_choice, check_number
from autotimm.runs.plots import LR_FINDER_DATA
from autotimm.tuner.base import run_step, sweep_trainer
from autotimm.tuner.config import LR_RANGE, MIN_LR_POINTS, TunerConfig, TuningError

__all__ = ["LRRangeTest", "find_lr", "lr_attribute", "smooth", "suggest_lr"]

# The loss must fall by at least this fraction somewhere on the curve for a suggestion.
_MIN_LOSS_DROP = 0.05
# Where a tuned learning rate is written, as Lightning's own tuner looks for it.
_LR_ATTRIBUTES = ("lr", "learning_rate")
# The divergence test reads a bias-corrected moving average of the loss with this factor.
_DIVERGENCE_BETA = 0.98
_OFF = "Turn this step off with `TunerConfig(auto_lr=False)` and set `lr` on the model yourself."


class LRRangeTest(Callback):
    """An LR range test: raise the learning rate step by step from `min_lr` to `max_lr` and record the loss.

    Before each of `num_training` optimizer steps the learning rate of the first parameter group (the
    model's `lr`) is set to the next point of an exponential (or linear) ramp, and every other group's
    keeps its ratio to it (a backbone at `backbone_lr_scale` or `layer_decay` stays that much slower, as
    it will train after the test); the step's training loss is recorded unsmoothed (the mean over its
    accumulated batches) in `lrs` / `losses`. The fit is stopped (`trainer.should_stop`) when the ramp
    is done, or sooner when the loss diverges: it is not finite, or its moving average exceeds both
    `early_stop_threshold` times its lowest and the first loss. The fit's learning-rate schedulers are
    switched off during the test. When the fit ends (or fails), the model's weights and the optimizers'
    state are put back as they were at its start. Use it in a fit of its own that may run as many epochs
    as it needs (each epoch makes at least one step: `max_epochs` above `num_training` is enough);
    `AutoTrainer` runs it for `TunerConfig(auto_lr=True)`.

    Args:
        min_lr: The first learning rate.
        max_lr: The last learning rate.
        num_training: Optimizer steps, one point of the curve each.
        mode: `"exponential"` (evenly spaced in log space) or `"linear"`.
        early_stop_threshold: Stop once the smoothed loss exceeds this multiple of its minimum (and
            the first loss); `None` stops only on a non-finite loss.

    Examples:
        >>> test = LRRangeTest(min_lr=1e-5, max_lr=1.0, num_training=30)
        >>> trainer = pl.Trainer(max_epochs=31, callbacks=[test], limit_val_batches=0)  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=data)  # doctest: +SKIP
        >>> suggest_lr(test.lrs, test.losses)  # doctest: +SKIP
        0.0021
    """

    def __init__(
        self,
        min_lr: float = LR_RANGE["min_lr"],
        max_lr: float = LR_RANGE["max_lr"],
        num_training: int = 100,
        mode: Literal["exponential", "linear"] = "exponential",
        early_stop_threshold: float | None = 4.0,
    ) -> None:
        check_choice("mode", mode, ("exponential", "linear"))
        check_number("min_lr", min_lr, low=0, low_inclusive=False)
        check_number("max_lr", max_lr, low=min_lr, low_inclusive=False)
        check_number("num_training", num_training, low=2, integer=True)
        if early_stop_threshold is not None:
            check_number("early_stop_threshold", early_stop_threshold, low=1, low_inclusive=False)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.num_training = num_training
        self.mode = mode
        self.early_stop_threshold = early_stop_threshold
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self._saved: tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None = None
        self._ratios: list[list[float]] = []  # each group's learning rate over its optimizer's first group's
        self._step, self._loss_sum, self._batches = 0, 0.0, 0
        self._average, self._smoothed, self._lowest = 0.0, math.inf, math.inf

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (0 to `num_training - 1`) of the ramp."""
        t = min(step, self.num_training - 1) / (self.num_training - 1)
        if self.mode == "linear":
            return (1 - t) * self.min_lr + t * self.max_lr
        return self.min_lr ** (1 - t) * self.max_lr**t

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved = (
            {name: value.detach().to("cpu", copy=True) for name, value in pl_module.state_dict().items()},
            [copy.deepcopy(optimizer.state_dict()) for optimizer in trainer.optimizers],
        )
        trainer.strategy.lr_scheduler_configs = []  # the test sets the learning rate itself
        self._ratios = [_lr_ratios(optimizer) for optimizer in trainer.optimizers]
        self.lrs, self.losses = [], []
        self._step = trainer.global_step
        self._loss_sum, self._batches = 0.0, 0
        self._average, self._smoothed, self._lowest = 0.0, math.inf, math.inf

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        lr = self.lr_at(len(self.lrs))
        for optimizer, ratios in zip(trainer.optimizers, self._ratios, strict=True):
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):
            # Lightning divides the loss of each accumulated batch by their number.
            self._loss_sum += float(loss) * trainer.accumulate_grad_batches
            self._batches += 1
        if trainer.global_step == self._step:
            return  # gradients are still being accumulated
        self._step = trainer.global_step
        if self._batches:
            self._record(self.lr_at(len(self.lrs)), self._loss_sum / self._batches)
            self._loss_sum, self._batches = 0.0, 0
        if len(self.lrs) >= self.num_training or self._diverged():
            trainer.should_stop = True

    def _record(self, lr: float, loss: float) -> None:
        self.lrs.append(lr)
        self.losses.append(loss)
        if math.isfinite(loss):
            self._average = _DIVERGENCE_BETA * self._average + (1 - _DIVERGENCE_BETA) * loss
            self._smoothed = self._average / (1 - _DIVERGENCE_BETA ** len(self.losses))
            self._lowest = min(self._lowest, self._smoothed)

    def _diverged(self) -> bool:
        if not self.losses:
            return False
        if not math.isfinite(self.losses[-1]):
            return True
        threshold = self.early_stop_threshold
        # Above `threshold` times its lowest, and above where it started: a loss that has fallen close to
        # zero, on data the model has nearly learnt, may jump many times its lowest without diverging.
        return threshold is not None and self._smoothed > max(threshold * self._lowest, self.losses[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore(trainer, pl_module)

    def _restore(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved is None:
            return
        weights, optimizer_states = self._saved
        pl_module.load_state_dict(weights)
        for optimizer, state in zip(trainer.optimizers, optimizer_states, strict=False):
            optimizer.load_state_dict(state)
        self._saved = None


def _lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's starting learning rate over the first group's."""
    lrs = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    return [lr / lrs[0] if lrs[0] > 0 else 1.0 for lr in lrs]


def smooth(losses: Sequence[float], window: int) -> list[float]:
    """Bias-corrected exponential moving average with a span of about `window` points; NaNs are skipped.

    Examples:
        >>> smooth([1.0, 1.0, 1.0], window=5)
        [1.0, 1.0, 1.0]
    """
    beta = 1.0 - 2.0 / (max(window, 1) + 1)
    avg, seen, out = 0.0, 0, []
    for loss in losses:
        if math.isfinite(loss):
            avg = beta * avg + (1 - beta) * loss
            seen += 1
        out.append(avg / (1 - beta**seen) if seen else float("nan"))
    return out


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], min_drop: float = _MIN_LOSS_DROP) -> float | None:
    """Suggest a learning rate from an LR range test, or `None` if the loss never fell.

    The losses are smoothed over about a tenth of the points. The suggestion is the learning
    rate of the steepest descent of the smoothed loss against `log(lr)`, searched only
    before the loss minimum (past it, training diverges). The minimum must lie `min_drop`
    below the starting loss, else the curve shows no usable descent.

    Args:
        lrs: Learning rates, increasing.
        losses: Raw (unsmoothed) losses at those learning rates.
        min_drop: Fraction the smoothed loss must fall below its start.

    Examples:
        >>> lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
        >>> losses = [2.0 - 1.5 / (1 + math.exp(-(i - 14))) + (0.3 * (i - 20) if i > 20 else 0) for i in range(25)]
        >>> 1e-3 < suggest_lr(lrs, losses) < 1e-2
        True
    """
    n = len(lrs)
    if n < 3:
        return None
    curve = smooth(losses, window=max(3, n // 10))
    points = [(i, c) for i, c in enumerate(curve) if math.isfinite(c)]
    if len(points) < 3:
        return None
    start = points[0][1]
    i_min, min_loss = min(points, key=lambda p: p[1])
    if min_loss > start * (1.0 - min_drop) or i_min == 0:
        return None
    best_i, best_slope = i_min, 0.0
    for (i0, c0), (i1, c1) in zip(points, points[1:], strict=False):
        if i1 > i_min:
            break
        slope = (c1 - c0) / (math.log(lrs[i1]) - math.log(lrs[i0]))
        if slope < best_slope:
            best_i, best_slope = i0, slope
    # The steepest segment starts at best_i; its midpoint is the suggestion.
    j = min(best_i + 1, i_min)
    return math.sqrt(lrs[best_i] * lrs[j])


def lr_attribute(model: pl.LightningModule) -> str:
    """The attribute or hyperparameter the model reads its learning rate from (`lr` or `learning_rate`).

    Raises:
        TuningError: If the model has neither.

    Examples:
        >>> lr_attribute(ImageClassifier("resnet18", num_classes=2))  # doctest: +SKIP
        'lr'
    """
    for name in _LR_ATTRIBUTES:
        if lightning_hasattr(model, name):
            return name
    raise TuningError(
        f"The learning-rate finder needs the model to read its learning rate from an attribute or hyperparameter "
        f"named one of {list(_LR_ATTRIBUTES)}, and {type(model).__name__} has none. Add one, or turn this step off "
        "with `TunerConfig(auto_lr=False)`."
    )


def find_lr(
    trainer: pl.Trainer, config: TunerConfig, model: pl.LightningModule, loaders: dict[str, Any], attribute: str
) -> dict[str, Any]:
    """Run the LR range test of `config` in a fit of its own, set the suggestion on `model` and save the curve.

    The test's fit runs on `trainer`'s device and precision, with its gradient accumulation and
    clipping and `limit_train_batches`, without validation, loggers or `trainer`'s callbacks;
    `trainer` itself is left as it is.

    Returns:
        `{"lr": suggestion, "lr_find_curve": path of the saved curve}`.

    Raises:
        TuningError: If the curve has too few points or shows no descent (the message says why).

    Examples:
        >>> find_lr(trainer, TunerConfig(), model, {"datamodule": data}, "lr")  # doctest: +SKIP
        {'lr': 0.0021, 'lr_find_curve': 'runs/train/plots/lr_finder.json'}
    """
    kwargs = {**LR_RANGE, **config.lr_find_kwargs}
    test = LRRangeTest(**kwargs)
    sweep = sweep_trainer(
        trainer,
        callbacks=[test],
        # The test stops the fit itself, after `num_training` steps; every epoch makes at least one step.
        # (A model's scheduler, unused in the test, is sized from these limits.)
        max_epochs=test.num_training + 1,
        max_steps=test.num_training + 1,
        limit_train_batches=trainer.limit_train_batches,
        limit_val_batches=0,
    )
    run_step("learning-rate finder", _OFF, lambda: sweep.fit(model, **loaders))
    lrs, losses = test.lrs, test.losses
    if len(lrs) < MIN_LR_POINTS:
        where = f"the loss diverged at lr={lrs[-1]:.1e} if not sooner" if lrs else "it recorded no training loss"
        raise TuningError(
            f"The learning-rate finder recorded only {len(lrs)} points (it needs at least {MIN_LR_POINTS}): "
            f"{where}. Lower `min_lr` (now {test.min_lr:g}) or raise `early_stop_threshold` in `lr_find_kwargs`. "
            f"{_OFF}"
        )
    lr = suggest_lr(lrs, losses)
    if lr is not None:
        lr = float(min(max(lr, test.min_lr), test.max_lr))
    curve = _save_curve(trainer, lrs, losses, lr)
    if lr is None:
        raise TuningError(
            f"The learning-rate finder could not suggest a learning rate: over {len(lrs)} steps from "
            f"{lrs[0]:.1e} to {lrs[-1]:.1e} the smoothed loss never fell {_MIN_LOSS_DROP:.0%} below its start. "
            f"Give it more steps (`num_training`) or another range in `lr_find_kwargs`; the curve is in {curve}. "
            f"{_OFF}"
        )
    lightning_setattr(model, attribute, lr)
    rank_zero_info(f"autotimm: learning-rate finder chose {attribute}={lr:.3g} (curve saved to {curve})")
    return {"lr": lr, "lr_find_curve": str(curve)}


def _save_curve(trainer: pl.Trainer, lrs: list[float], losses: list[float], suggestion: float | None) -> Path:
    """Write the curve to `<run_dir>/plots/lr_finder.json` (AutoTrainer), or to `lr_find.json` in the log folder.

    Outside a run folder the file is never written over an earlier run's: `lr_find-v1.json`, ... .
    """
    run_dir = getattr(trainer, "run_dir", None)
    out_dir = Path(trainer.log_dir or trainer.default_root_dir) if run_dir is None else Path(run_dir) / "plots"
    path = out_dir / ("lr_find.json" if run_dir is None else LR_FINDER_DATA)
    version = 0
    while path.exists() and run_dir is None:
        version += 1
        path = out_dir / f"lr_find-v{version}.json"
    path = Path(trainer.strategy.broadcast(str(path)))
    if trainer.is_global_zero:
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "lr": lrs,
            "loss": [loss if math.isfinite(loss) else None for loss in losses],
            "suggestion": suggestion,
        }
        path.write_text(json.dumps(payload, indent=1))
    return path
