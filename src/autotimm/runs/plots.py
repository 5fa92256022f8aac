"""Pictures of a run: loss and metric curves, the LR finder's curve and a confusion matrix, as PNGs.

`plot_run` draws them from a run folder; the `RunPlots` callback draws them at the end of `fit`
with the same functions (`plot_jobs`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytorch_lightning.utilities import rank_zero_info

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "CONFUSION_DATA",
    "LR_FINDER_DATA",
    "PLOT_FILES",
    "draw_confusion",
    "new_figure",
    "plot_jobs",
    "plot_run",
    "save_figure",
]

_STAGES = ("train", "val", "test")
_STAGE_COLORS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
_STAGE_STYLES = {"train": "--", "val": "-", "test": ":"}
_STAGE_ORDER = (*_STAGES, "")
# Not metrics of the model: no panel of their own.
_BOOKKEEPING = frozenset({"epoch", "step", "time", "images_per_s", "peak_memory_mb"})
_MAX_PANELS = 24
_MAX_ANNOTATED_CLASSES = 30  # more classes: shading only, no counts written in the cells
_MAX_LABELLED_CLASSES = 60  # more classes: no class names on the axes
_DPI = 100
# The data behind two pictures, kept in the plots folder so that `plot_run` can redraw them.
LR_FINDER_DATA = "lr_finder.json"
CONFUSION_DATA = "confusion_matrix.json"
# Every file the plots folder may hold.
PLOT_FILES = ("loss.png", "metrics.png", "lr_finder.png", "confusion_matrix.png", LR_FINDER_DATA, CONFUSION_DATA)


def plot_run(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """(Re)draw the pictures of a finished run from its folder.

    Draws `loss.png` and `metrics.png` from `metrics.json`, and `lr_finder.png` and
    `confusion_matrix.png` from the data `RunPlots` left next to them in `plots/`
    (`lr_finder.json`, `confusion_matrix.json`) when there is some. A picture with no data
    (no logged metric other than the loss, say) is left out.

    Args:
        run_dir: A run folder, `<default_root_dir>/runs/<run_id>` (`trainer.run_dir`).
        out_dir: Where to write the PNGs; `None` for `<run_dir>/plots`.

    Returns:
        The paths of the PNGs written.

    Raises:
        FileNotFoundError: If `run_dir` holds no `metrics.json`.

    Examples:
        >>> from autotimm.runs import plot_run
        >>> plot_run(trainer.run_dir)  # doctest: +SKIP
        [PosixPath('.../plots/loss.png'), PosixPath('.../plots/metrics.png')]
    """
    folder = Path(run_dir)
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        raise FileNotFoundError(
            f"No metrics.json in {str(folder)!r}: `plot_run` needs a run folder written by AutoTrainer, "
            "`<default_root_dir>/runs/<run_id>` (`trainer.run_dir`)."
        )
    epochs = json.loads(metrics.read_text(encoding="utf-8"))
    out = folder / "plots" if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [path for _, draw in plot_jobs(epochs, out, data_dir=folder / "plots") if (path := draw()) is not None]


def plot_jobs(
    epochs: list[dict[str, Any]], out: Path, data_dir: Path
) -> Iterator[tuple[str, Callable[[], Path | None]]]:
    """The pictures to draw into `out`, each a `(file name, draw)` pair; `draw` returns the path written or `None`.

    Args:
        epochs: The per-epoch entries of a run (the content of `metrics.json`).
        out: The folder to draw into.
        data_dir: The folder holding `lr_finder.json` and `confusion_matrix.json`, if any.

    Examples:
        >>> [name for name, _ in plot_jobs([], Path("plots"), data_dir=Path("nowhere"))]
        ['loss.png', 'metrics.png']
    """
    yield "loss.png", lambda: _draw_loss(_series(epochs), out / "loss.png")
    yield "metrics.png", lambda: _draw_metrics(_series(epochs), out / "metrics.png")
    if (data_dir / LR_FINDER_DATA).is_file():
        yield "lr_finder.png", lambda: _draw_lr_finder(_read(data_dir / LR_FINDER_DATA), out / "lr_finder.png")
    if (data_dir / CONFUSION_DATA).is_file():
        yield (
            "confusion_matrix.png",
            lambda: draw_confusion(_read(data_dir / CONFUSION_DATA), out / "confusion_matrix.png"),
        )


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


# ---- per-epoch series ------------------------------------------------------------------------
Series = dict[str, dict[str, tuple[list[int], list[float]]]]


def _series(epochs: list[dict[str, Any]]) -> Series:
    """Per metric name, per stage (`train`, `val`, `test`, or `""` for keys without a stage): epochs and values.

    `train/loss_epoch` is the train `loss` (preferred to the last step's `train/loss`);
    `*_step` keys are left out.
    """
    keys = {k for entry in epochs for k in entry if k not in _BOOKKEEPING and not k.endswith("_step")}
    out: Series = {}
    for key in sorted(keys):
        if f"{key}_epoch" in keys:
            continue
        stage, _, name = key.partition("/") if key.split("/", 1)[0] in _STAGES else ("", "", key)
        name = name.removesuffix("_epoch")
        xs, ys = [], []
        for entry in epochs:
            value = _number(entry.get(key))
            if value is not None:
                xs.append(int(entry["epoch"]))
                ys.append(value)
        if xs:
            out.setdefault(name, {})[stage] = (xs, ys)
    return out


def _number(value: Any) -> float | None:
    """A recorded scalar as a float (run records store NaN/Inf as strings), else `None`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# ---- drawing ---------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A new figure (inches) on its own Agg canvas: pyplot, its global backend and its windows are never touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as PNG and free its artists; return the path."""
    figure.savefig(path, dpi=_DPI)
    figure.clear()  # the figure is no pyplot figure, so nothing stays registered; free its artists now
    return path


def _plot_stages(ax: Axes, stages: dict[str, tuple[list[int], list[float]]], name: str) -> None:
    """One metric's curves, coloured by stage."""
    for stage in sorted(stages, key=_STAGE_ORDER.index):
        xs, ys = stages[stage]
        ax.plot(xs, ys, marker="o", markersize=3, label=stage or name, color=_STAGE_COLORS.get(stage))
    _finish_axes(ax)


def _plot_family(ax: Axes, family: dict[str, dict[str, tuple[list[int], list[float]]]]) -> None:
    """Several related metrics (`map`, `map_50`, ...) on one axes: a colour per metric, a line style per stage."""
    for i, (name, stages) in enumerate(family.items()):
        for stage in sorted(stages, key=_STAGE_ORDER.index):
            xs, ys = stages[stage]
            label = f"{name} ({stage})" if stage and len(stages) > 1 else name
            style = _STAGE_STYLES.get(stage, "-")
            ax.plot(xs, ys, marker="o", markersize=3, label=label, color=f"C{i % 10}", linestyle=style)
    _finish_axes(ax)


def _finish_axes(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = {x for line in ax.get_lines() for x in line.get_xdata()}
    if len(epochs) == 1:  # a one-epoch run: an axis around that epoch, not a fraction of one
        (epoch,) = epochs
        ax.set_xlim(epoch - 1, epoch + 1)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _families(series: Series) -> dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]]:
    """The metrics other than the loss, grouped by the part of their name before the first `_`.

    Detection's `map`, `map_50`, ..., `map_large` share a panel, as do the `mar_*` recalls and the
    `loss_*` terms; a COCO precision or recall (`map*`, `mar*`) that is -1 at every epoch ("no
    boxes of this size") is left out.
    """
    families: dict[str, dict[str, dict[str, tuple[list[int], list[float]]]]] = {}
    for name, stages in series.items():
        absent = name.startswith(("map", "mar")) and all(v == -1 for _, ys in stages.values() for v in ys)
        if name == "loss" or absent:
            continue
        families.setdefault(name.split("_", 1)[0], {})[name] = stages
    return families


def _draw_loss(series: Series, path: Path) -> Path | None:
    stages = {stage: values for stage, values in series.get("loss", {}).items() if stage in ("train", "val")}
    if not stages:
        rank_zero_info("autotimm: no train or val loss was logged per epoch; loss.png not drawn.")
        return None
    figure = new_figure(6, 4)
    ax = figure.add_subplot()
    _plot_stages(ax, stages, "loss")
    ax.set_ylabel("loss")
    ax.set_title("Loss per epoch")
    return save_figure(figure, path)


def _draw_metrics(series: Series, path: Path) -> Path | None:
    families = _families(series)
    if not families:
        rank_zero_info("autotimm: no metric other than the loss was logged per epoch; metrics.png not drawn.")
        return None
    names = list(families)
    if len(names) > _MAX_PANELS:
        rank_zero_info(f"autotimm: metrics.png shows the first {_MAX_PANELS} of {len(names)} metric panels.")
        names = names[:_MAX_PANELS]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    figure = new_figure(4.2 * cols, 3.2 * rows)
    for i, prefix in enumerate(names):
        ax = figure.add_subplot(rows, cols, i + 1)
        family = families[prefix]
        if len(family) == 1:
            ((name, stages),) = family.items()
            _plot_stages(ax, stages, name)
            ax.set_title(name)
        else:
            _plot_family(ax, family)
            ax.set_title(f"{prefix}_*")
    return save_figure(figure, path)


def _draw_lr_finder(curve: dict[str, Any], path: Path) -> Path:
    lrs = [float(lr) for lr in curve["lr"]]
    losses = [float("nan") if loss is None else float(loss) for loss in curve["loss"]]
    smoothed = _smoothed(losses, span=max(3, len(lrs) // 10))
    figure = new_figure(6, 4)
    ax = figure.add_subplot()
    ax.plot(lrs, losses, color="tab:blue", alpha=0.3, linewidth=1, label="loss")
    ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="smoothed")
    suggestion = curve.get("suggestion")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2e}")
    finite = [s for s in smoothed if math.isfinite(s)]
    if finite and max(finite) > min(finite):
        # Past the minimum the loss diverges: keep the axis on the useful part of the curve.
        start, low = finite[0], min(finite)
        span = start - low if start > low else max(finite) - low
        ax.set_ylim(low - 0.2 * span, start + 0.5 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate finder")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save_figure(figure, path)


def _smoothed(values: Sequence[float], span: int) -> list[float]:
    """An exponential moving average over about `span` points, corrected for its start at zero;
    non-finite values are skipped (the average holds), and before the first finite one it is NaN.

    Examples:
        >>> _smoothed([2.0, float("nan"), 2.0], span=3)
        [2.0, 2.0, 2.0]
    """
    keep = (span - 1) / (span + 1)  # the weight of the past: the usual span-to-factor conversion
    total, weight, out = 0.0, 0.0, []
    for value in values:
        if math.isfinite(value):
            total = keep * total + (1 - keep) * value
            weight = keep * weight + (1 - keep)
        out.append(total / weight if weight else float("nan"))
    return out


def draw_confusion(data: dict[str, Any], path: Path) -> Path:
    """Draw a confusion matrix: counts in the cells, shaded by the share of each true class (row).

    Args:
        data: `{"class_names": [...], "counts": [[...], ...]}` (rows: true class, columns: predicted),
            with optional `"split"` and `"weights"` (which weights made it), both shown in the title.
        path: The PNG to write.

    Examples:
        >>> draw_confusion({"class_names": ["a", "b"], "counts": [[3, 1], [0, 4]]}, Path("cm.png"))  # doctest: +SKIP
        PosixPath('cm.png')
    """
    counts = data["counts"]
    names = data["class_names"]
    n = len(counts)
    totals = [sum(row) for row in counts]
    shares = [[c / total if total else 0.0 for c in row] for row, total in zip(counts, totals, strict=True)]
    total = sum(totals)
    correct = sum(counts[i][i] for i in range(n))
    side = min(max(4.0, 0.45 * n + 2.5), 16.0)
    figure = new_figure(side + 1.2, side)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, label="share of the true class")
    if n <= _MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                color = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(counts[i][j]), ha="center", va="center", color=color, fontsize="small")
    if n <= _MAX_LABELLED_CLASSES:
        tilt = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if max(map(len, names)) > 3 else {}
        ax.set_xticks(range(n), names, **tilt)
        ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = f", accuracy {correct / total:.1%}" if total else ""
    weights = f"\n{data['weights']}" if data.get("weights") else ""
    ax.set_title(f"Confusion matrix ({data.get('split', 'val')}, {total} images{accuracy}){weights}")
    return save_figure(figure, path)
