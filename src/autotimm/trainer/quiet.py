"""A quiet console: Lightning's routine messages about its own machinery go to DEBUG while AutoTrainer runs.

What stays on the console: the progress bar, autotimm's one line on where the run is written,
the tuner's results, the model summary (without the FLOPs column that is 0 unless the model
sets `example_input_array`), and every warning about the user's data, model or code. What goes
to the `autotimm.trainer.quiet` logger at DEBUG instead: the device lines (`GPU available: ...`),
Lightning's litlogger tip, `Loading train_dataloader to estimate number of stepping batches`,
the messages of Lightning's finders and of the fits they run, the restore of their internal
checkpoints (`.lr_find_<uuid>.ckpt`), and `weights_only was not set`. Ignored: six warnings
about Lightning's own internals or advice that does not apply to an autotimm task (see
`_IGNORED_WARNINGS`).

Nothing is changed for good: the log filters and warning filters are in place only inside
`quiet_lightning`, which AutoTrainer enters in its constructor and in `fit`, `validate`, `test`
and `predict` (the `quiet` decorator). Logging `autotimm` at DEBUG shows what was held back:
`logging.getLogger("autotimm").setLevel(logging.DEBUG)` with a handler.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pytorch_lightning.callbacks import ModelSummary
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count

__all__ = ["CompactModelSummary", "quiet_lightning", "quiet"]

log = logging.getLogger(__name__)

# Lightning's loggers whose routine messages are held back, and the messages (searched in the text).
_HELD_BACK: dict[str, tuple[str, ...]] = {
    "pytorch_lightning.utilities.rank_zero": (  # everything Lightning logs through `rank_zero_info`
        r"^(GPU|TPU|HPU) available: ",
        r"^LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES: ",
        r"^💡 Tip: .*litlogger",
        r"^Loading `train_dataloader` to estimate number of stepping batches\.$",
        # Lightning's finders save and restore the run around their search in hidden files.
        r"^(Restoring states from|Restored all states from) the checkpoint (path )?at .*"
        r"[/\\]\.(lr_find|scale_batch_size)_[0-9a-f-]+\.ckpt$",
    ),
    "pytorch_lightning.trainer.connectors.checkpoint_connector": (r"^`weights_only` was not set",),
    "pytorch_lightning.tuner.batch_size_scaling": (),  # all theirs are held back: see `_finder_running`
    "pytorch_lightning.tuner.lr_finder": (),
}

# The private callbacks AutoTrainer adds: a user cannot "add" them, as Lightning's warning asks.
_OWN_CALLBACK = (
    r"(?:\"(?:_BestCheckpoint|_LastCheckpoint)\{[^\"]*\}\"|'(?:RunRecord|RunPlots|StopOnNonFiniteLoss|FastPath)')"
)
# (message regex, module regex of where the warning is attributed); all are ignored.
_IGNORED_WARNINGS: tuple[tuple[str, str], ...] = (
    # Lightning's own use of a torch API that torch deprecated; nothing the user can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"pytorch_lightning\."),
    # autotimm logs `train/lr` and the training loss at every epoch's end, whatever `log_every_n_steps` is.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", r"pytorch_lightning\."),
    # The tasks define `on_before_batch_transfer` on purpose (label checks on the CPU); a data module that
    # defines it too takes precedence, as Lightning documents: its warning says nothing new.
    (
        r"You have overridden `on_before_batch_transfer` in `LightningModule` but have passed in a",
        r"pytorch_lightning\.",
    ),
    # A resumed run writes into its own run folder, which holds its earlier checkpoints and logs (the CSV
    # logger appends to its file, whatever its warning says); a new run's folder is always empty.
    (r"Checkpoint directory .*[/\\]checkpoints exists and is not empty", r"pytorch_lightning\."),
    (r"Experiment logs directory .*[/\\]logs[/\\]csv[/\\]? exists and is not empty", r"lightning_fabric\."),
    # A checkpoint of another AutoTrainer configuration (another `checkpoint_monitor`, `run_record=False`)
    # holds the state of autotimm's own callbacks; the warning names their private classes.
    (
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided "
        r"during `Trainer` instantiation\. Please add the following callbacks: "
        rf"\[{_OWN_CALLBACK}(?:, {_OWN_CALLBACK})*\]",
        r"pytorch_lightning\.",
    ),
)


class _HoldBack(logging.Filter):
    """Passes a record on to `autotimm.trainer.quiet` at DEBUG, instead of the console, when it is routine.

    Routine: a message matching one of `patterns`, or any message logged while Lightning's
    finders search (the fits of their trials, their progress); autotimm's tuning reports what
    they found.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(p.search(message) for p in self.patterns) or _finder_running():
            log.debug("%s (held back from %s)", message, record.name)
            return False
        return True


# Where Lightning's finders run their searches.
_FINDER_MODULES = ("pytorch_lightning.tuner.", "pytorch_lightning.callbacks.batch_size_finder",
                   "pytorch_lightning.callbacks.lr_finder")  # fmt: skip


def _finder_running() -> bool:
    """Whether the caller runs inside one of Lightning's finders (a frame of their modules is on the stack)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_FINDER_MODULES):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hold back Lightning's routine messages (see the module's docstring) while the block runs.

    Safe to nest; everything is put back on exit, also after an error.

    Examples:
        >>> with quiet_lightning():  # doctest: +SKIP
        ...     trainer.fit(model, datamodule=data)
    """
    filters = [(logging.getLogger(name), _HoldBack(patterns)) for name, patterns in _HELD_BACK.items()]
    with warnings.catch_warnings():
        for message, module in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, module=module)
        for logger, hold_back in filters:
            logger.addFilter(hold_back)
        try:
            yield
        finally:
            for logger, hold_back in filters:
                logger.removeFilter(hold_back)


Method = TypeVar("Method", bound=Callable[..., Any])


def quiet(method: Method) -> Method:
    """Run a `Trainer` method inside `quiet_lightning()`."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with quiet_lightning():
            return method(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


class CompactModelSummary(ModelSummary):
    """Lightning's model summary, without the FLOPs column and total when nothing was counted.

    Lightning counts FLOPs only for a model that sets `example_input_array`; otherwise its
    table shows a column of zeros. Takes `ModelSummary`'s arguments (`max_depth`).
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            ModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        columns = [(name, [str(v) for v in values]) for name, values in summary_data if name != "FLOPs"]
        widths = [max(len(name), *(len(v) for v in values)) for name, values in columns]
        rows = [[name for name, _ in columns], *zip(*(values for _, values in columns), strict=True)]
        lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        rule = "-" * max(len(line) for line in lines)
        totals = [
            (get_human_readable_count(trainable_parameters), "Trainable params"),
            (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
            (get_human_readable_count(total_parameters), "Total params"),
            (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
            (str(total_training_modes["train"]), "Modules in train mode"),
            (str(total_training_modes["eval"]), "Modules in eval mode"),
        ]
        table = [lines[0], rule, *lines[1:], rule, *(f"{value:<10}{label}" for value, label in totals)]
        rank_zero_info("\n" + "\n".join(table))
