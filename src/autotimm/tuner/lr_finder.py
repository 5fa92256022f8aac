"""Reading the learning-rate finder's loss-vs-LR curve: raw losses, smoothing, a suggestion."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["raw_losses", "smooth", "suggest_lr"]

# Lightning's `_LRCallback` smooths with this factor.
LIGHTNING_BETA = 0.98


def raw_losses(smoothed: Sequence[float], beta: float = LIGHTNING_BETA, step_offset: int = 1) -> list[float]:
    """Undo the smoothing of Lightning's LR finder and return the per-step losses.

    Lightning keeps `avg = beta * avg + (1 - beta) * loss` and records
    `avg / (1 - beta ** (global_step + 1))`, reading `global_step` after the optimizer step,
    i.e. one ahead (`step_offset=1`; Lightning issue #14167). Its first points are therefore
    biased low (the first by half), which bends the start of the curve downwards. After a
    non-finite point the losses cannot be recovered and are NaN.

    Examples:
        >>> beta = 0.98
        >>> avg = beta * 0 + (1 - beta) * 2.0
        >>> raw_losses([avg / (1 - beta**2)])
        [2.0]
    """
    out: list[float] = []
    previous_avg = 0.0
    for step, value in enumerate(smoothed):
        if not math.isfinite(value):  # a skipped or diverged step: the chain cannot be followed further
            out.extend([float("nan")] * (len(smoothed) - step))
            break
        avg = value * (1 - beta ** (step + 1 + step_offset))
        out.append((avg - beta * previous_avg) / (1 - beta))
        previous_avg = avg
    return out


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


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], min_drop: float = 0.05) -> float | None:
    """Suggest a learning rate from an LR-range test, or `None` if the loss never fell.

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
