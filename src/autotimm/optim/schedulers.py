"""Learning-rate scheduler registry: names, run-derived defaults and Lightning configs.

Names come in two groups, both returned by `list_schedulers()`:

- `"torch"`: `torch.optim.lr_scheduler` classes under their lowercase class names, plus
  `cosine_warmup`, a linear warmup followed by cosine decay, stepped every optimizer step.
- `"timm"`: the schedules of `timm.scheduler.create_scheduler_v2`, prefixed with `timm_`
  (`timm_cosine`, `timm_tanh`, `timm_step`, `timm_multistep`, `timm_plateau`,
  `timm_poly`), stepped every epoch.

The short names in `SCHEDULER_ALIASES` (`cosine`, `step`, `plateau`, ...) resolve to
torch names. They are not repeated in `list_schedulers()`, so each schedule is listed
once; they are accepted wherever a name is. Names are case-insensitive.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
from timm.scheduler import PlateauLRScheduler, create_scheduler_v2
from timm.scheduler.scheduler import Scheduler as TimmScheduler
from torch.optim import Optimizer, lr_scheduler

from autotimm._errors import check_mapping, check_number, unknown_choice

__all__ = [
    "SCHEDULER_ALIASES",
    "list_schedulers",
    "resolve_scheduler",
    "check_scheduler_kwargs",
    "create_scheduler",
    "step_scheduler",
    "set_schedule_length",
]

SCHEDULER_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "cosine": "cosineannealinglr",
        "exponential": "exponentiallr",
        "multistep": "multisteplr",
        "onecycle": "onecyclelr",
        "plateau": "reducelronplateau",
        "step": "steplr",
        "warmup_cosine": "cosine_warmup",
    }
)
"""Short names and the torch scheduler names they stand for."""

_DEFAULT_MONITOR = "val/loss"

# Constructor arguments never offered to users: Lightning restores scheduler state itself.
_NEVER_ACCEPTED = ("optimizer", "last_epoch")


@dataclass(frozen=True)
class _Run:
    """The run a scheduler is built for: epoch-interval schedules use `max_epochs`,
    step-interval ones `total_steps` (all the optimizer steps of the run)."""

    max_epochs: int
    steps_per_epoch: int
    total_steps: int


@dataclass(frozen=True)
class _WarmupCosineFactor:
    """Multiplier of the base lr at step `step`: linear warmup, then cosine down to `floor`."""

    warmup: int
    total: int
    floor: float
    default_warmup: bool = False  # the warmup is `_default_warmup(total)`, so it follows a new `total`

    def __call__(self, step: int) -> float:
        peak = max(self.warmup - 1, 0)  # the one step that runs at the full lr
        if step < peak:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - peak) / (self.total - peak))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _cosine_warmup(
    optimizer: Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: int,
    warmup_steps: int | None = None,
    warmup_epochs: float | None = None,
    eta_min: float = 0.0,
) -> lr_scheduler.LambdaLR:
    """Linear warmup to each group's lr, then cosine decay that reaches `eta_min` at `total_steps`."""
    default_warmup = warmup_steps is None and warmup_epochs is None
    if warmup_steps is not None and warmup_epochs is not None:
        raise ValueError(f"Give `warmup_steps` or `warmup_epochs`, not both (got {warmup_steps} and {warmup_epochs}).")
    if warmup_epochs is not None:
        check_number("warmup_epochs", warmup_epochs, low=0)
        warmup_steps = round(warmup_epochs * steps_per_epoch)
    elif warmup_steps is None:
        warmup_steps = _default_warmup(total_steps)
    check_number("warmup_steps", warmup_steps, low=0, integer=True)
    if warmup_steps >= total_steps:
        raise ValueError(f"The warmup ({warmup_steps} steps) must be shorter than the run ({total_steps} steps).")
    check_number("eta_min", eta_min, low=0)
    factors = []
    for group in optimizer.param_groups:
        base_lr = group.get("initial_lr", group["lr"])
        if eta_min > base_lr:
            raise ValueError(f"`eta_min` ({eta_min}) is above the learning rate ({base_lr}) it should decay from.")
        floor = eta_min / base_lr if base_lr else 0.0
        factors.append(_WarmupCosineFactor(warmup_steps, total_steps, floor, default_warmup))
    return lr_scheduler.LambdaLR(optimizer, factors)


def _default_warmup(total_steps: int) -> int:
    """5% of the run's steps, at least 1 and shorter than the run (0 for a one-step run)."""
    return min(max(1, round(0.05 * total_steps)), total_steps - 1)


def _timm_scheduler(optimizer: Optimizer, **kwargs: Any) -> TimmScheduler:
    scheduler, _ = create_scheduler_v2(optimizer, **kwargs)
    return scheduler


def _milestones(max_epochs: int) -> list[int]:
    return sorted({max(1, int(0.6 * max_epochs)), max(1, int(0.85 * max_epochs))})


@dataclass(frozen=True)
class _Spec:
    """How to build one scheduler.

    `build(optimizer, **kwargs)` makes it; the keyword arguments of `signature_of`
    (default `build`) are the ones a user may set, less `hidden`, which `defaults` sets
    from the run. `monitor` marks metric-driven schedulers.
    """

    build: Callable[..., Any]
    interval: Literal["epoch", "step"]
    defaults: Callable[[Optimizer, _Run], dict[str, Any]] = lambda optimizer, run: {}
    hidden: tuple[str, ...] = ()
    monitor: bool = False
    signature_of: Callable[..., Any] | None = None

    def accepted(self) -> list[str]:
        parameters = inspect.signature(self.signature_of or self.build).parameters
        names = [p for p in parameters if p not in _NEVER_ACCEPTED and p not in self.hidden]
        return names + ["monitor"] if self.monitor else names


_TIMM_HIDDEN = ("sched", "step_on_epochs", "updates_per_epoch")


def _timm_spec(sched: str, **extra: Callable[[_Run], Any]) -> _Spec:
    """Spec of timm's `sched`, stepped per epoch; `extra` maps arguments to run-derived defaults."""

    def defaults(optimizer: Optimizer, run: _Run) -> dict[str, Any]:
        fixed = {"sched": sched, "step_on_epochs": True, "updates_per_epoch": run.steps_per_epoch}
        return {**fixed, "num_epochs": run.max_epochs, **{k: f(run) for k, f in extra.items()}}

    return _Spec(
        _timm_scheduler,
        "epoch",
        defaults,
        hidden=_TIMM_HIDDEN,
        monitor=sched == "plateau",
        signature_of=create_scheduler_v2,
    )


_SPECS: dict[str, _Spec] = {
    "cosine_warmup": _Spec(
        _cosine_warmup,
        "step",
        lambda optimizer, run: {"total_steps": run.total_steps, "steps_per_epoch": run.steps_per_epoch},
        hidden=("total_steps", "steps_per_epoch"),
    ),
    "cosineannealinglr": _Spec(
        lr_scheduler.CosineAnnealingLR, "epoch", lambda optimizer, run: {"T_max": run.max_epochs}
    ),
    "cosineannealingwarmrestarts": _Spec(
        lr_scheduler.CosineAnnealingWarmRestarts, "epoch", lambda optimizer, run: {"T_0": max(1, run.max_epochs // 3)}
    ),
    "exponentiallr": _Spec(
        lr_scheduler.ExponentialLR, "epoch", lambda optimizer, run: {"gamma": 0.01 ** (1 / run.max_epochs)}
    ),
    "linearlr": _Spec(
        lr_scheduler.LinearLR,
        "epoch",
        lambda optimizer, run: {"start_factor": 1.0, "end_factor": 0.0, "total_iters": run.max_epochs},
    ),
    "multisteplr": _Spec(
        lr_scheduler.MultiStepLR, "epoch", lambda optimizer, run: {"milestones": _milestones(run.max_epochs)}
    ),
    "onecyclelr": _Spec(
        lr_scheduler.OneCycleLR,
        "step",
        lambda optimizer, run: {
            "max_lr": [group["lr"] for group in optimizer.param_groups],
            "total_steps": run.total_steps,
        },
        hidden=("epochs", "steps_per_epoch"),
    ),
    "polynomiallr": _Spec(lr_scheduler.PolynomialLR, "epoch", lambda optimizer, run: {"total_iters": run.max_epochs}),
    "reducelronplateau": _Spec(lr_scheduler.ReduceLROnPlateau, "epoch", monitor=True),
    "steplr": _Spec(lr_scheduler.StepLR, "epoch", lambda optimizer, run: {"step_size": max(1, run.max_epochs // 3)}),
    "timm_cosine": _timm_spec("cosine"),
    "timm_multistep": _timm_spec("multistep", decay_milestones=lambda run: _milestones(run.max_epochs)),
    "timm_plateau": _timm_spec("plateau", plateau_mode=lambda run: "min"),
    "timm_poly": _timm_spec("poly"),
    "timm_step": _timm_spec("step", decay_epochs=lambda run: max(1, run.max_epochs // 3)),
    "timm_tanh": _timm_spec("tanh"),
}


def list_schedulers() -> dict[str, list[str]]:
    """List the scheduler names that `create_scheduler` can build.

    Aliases (`SCHEDULER_ALIASES`) are accepted everywhere but not listed here, so
    each schedule appears once.

    Returns:
        `{"torch": [...], "timm": [...]}`, each a sorted list of lowercase names.

    Examples:
        >>> names = list_schedulers()
        >>> "cosine_warmup" in names["torch"], "timm_cosine" in names["timm"]
        (True, True)
    """
    timm_names = sorted(name for name in _SPECS if name.startswith("timm_"))
    return {"torch": sorted(name for name in _SPECS if name not in timm_names), "timm": timm_names}


def resolve_scheduler(name: str) -> str:
    """Return the canonical scheduler name for `name` (any case, aliases allowed).

    Args:
        name: A name from `list_schedulers()` or a key of `SCHEDULER_ALIASES`.

    Returns:
        The canonical lowercase name.

    Raises:
        TypeError: If `name` is not a string.
        ValueError: If `name` is unknown; the message lists the closest names.

    Examples:
        >>> resolve_scheduler("Cosine")
        'cosineannealinglr'
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected `scheduler` to be a string, but got {type(name).__name__} {name!r}.")
    key = name.lower()
    key = SCHEDULER_ALIASES.get(key, key)
    if key not in _SPECS:
        raise unknown_choice("scheduler", name, [*_SPECS, *SCHEDULER_ALIASES])
    return key


def check_scheduler_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Check that every key of `kwargs` is an argument the scheduler accepts.

    The accepted keys come from the scheduler's signature (for timm names, the
    signature of `timm.scheduler.create_scheduler_v2`), less those autotimm derives from
    the run, plus `monitor` for plateau schedulers.

    Args:
        name: A scheduler name or alias, in any case.
        kwargs: Keyword arguments meant for the scheduler.

    Raises:
        TypeError: If `kwargs` is not a dict with string keys.
        ValueError: If the name is unknown, or a key is not accepted (the message names
            the key and lists the accepted ones).

    Examples:
        >>> check_scheduler_kwargs("cosine", {"T_max": 50, "eta_min": 1e-6})  # passes silently
    """
    key = resolve_scheduler(name)
    kwargs = check_mapping("scheduler_kwargs", kwargs)
    spec = _SPECS[key]
    accepted = spec.accepted()
    for arg in kwargs:
        if arg in spec.hidden:
            raise ValueError(
                f"`{arg}` cannot be set for scheduler {key!r}: autotimm sets it from the scheduler name and "
                f"the run (`max_epochs`, `steps_per_epoch`, `total_steps`). Accepted arguments: {accepted}."
            )
        if arg not in accepted:
            raise unknown_choice(f"each key of `scheduler_kwargs` for the `{key}` scheduler", arg, accepted)


def create_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    total_steps: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Build the scheduler `name` and wrap it in a Lightning lr-scheduler config.

    Defaults derived from the run (any keyword argument given wins):

    | name | interval | defaults |
    |---|---|---|
    | `cosine_warmup` | step | `warmup_steps` 5% of `total_steps` (at least 1), `eta_min=0.0` |
    | `cosineannealinglr` | epoch | `T_max=max_epochs` |
    | `cosineannealingwarmrestarts` | epoch | `T_0=max(1, max_epochs // 3)` |
    | `exponentiallr` | epoch | `gamma=0.01 ** (1 / max_epochs)` (lr ends at 1% of its start) |
    | `linearlr` | epoch | linear decay to 0: `start_factor=1.0`, `end_factor=0.0`, `total_iters=max_epochs` |
    | `multisteplr` | epoch | `milestones` at 60% and 85% of `max_epochs` |
    | `onecyclelr` | step | `max_lr` = each group's current lr, `total_steps` |
    | `polynomiallr` | epoch | `total_iters=max_epochs` |
    | `reducelronplateau` | epoch | torch's (`mode="min"`), `monitor="val/loss"` |
    | `steplr` | epoch | `step_size=max(1, max_epochs // 3)` |
    | `timm_cosine`, `timm_tanh`, `timm_poly` | epoch | `num_epochs=max_epochs` |
    | `timm_step` | epoch | `num_epochs=max_epochs`, `decay_epochs=max(1, max_epochs // 3)` |
    | `timm_multistep` | epoch | `num_epochs=max_epochs`, `decay_milestones` as `multisteplr` |
    | `timm_plateau` | epoch | `num_epochs=max_epochs`, `plateau_mode="min"`, `monitor="val/loss"` |

    Step-interval schedules (`cosine_warmup`, `onecyclelr`) span `total_steps` optimizer
    steps, `max_epochs * steps_per_epoch` unless given: pass the trainer's
    `estimated_stepping_batches` when `max_steps`, `limit_train_batches` or gradient
    accumulation shorten the run. Epoch-interval schedules span `max_epochs`.

    `cosine_warmup` takes `warmup_steps` or `warmup_epochs` (a fraction of an epoch is
    fine) and `eta_min`; its lr rises linearly (`lr * (s + 1) / warmup_steps` at step
    `s`) to the optimizer's lr, reached at the last warmup step, then follows a cosine
    down to `eta_min`, reached when the run ends (after its `total_steps`-th step).
    `onecyclelr` runs its last step at its final, lowest lr. timm schedules keep timm's own
    conventions (for example `timm_multistep` decays one epoch before `multisteplr`).

    Plateau schedulers take a `monitor` key (the logged metric to watch); set
    `mode="max"` (torch) or `plateau_mode="max"` (timm) for a metric that should grow.
    `timm_plateau` is deprecated by timm; prefer `reducelronplateau`.

    Args:
        name: A name from `list_schedulers()` or an alias, in any case.
        optimizer: The optimizer to schedule.
        max_epochs: Epochs in the run, >= 1.
        steps_per_epoch: Optimizer steps per epoch (after gradient accumulation), >= 1.
        total_steps: Optimizer steps in the whole run, >= 1, for the step-interval
            schedules; `None` means `max_epochs * steps_per_epoch`.
        **kwargs: Arguments of the scheduler; they override the defaults above.

    Returns:
        `{"scheduler": ..., "interval": "epoch" | "step", "frequency": 1}`, plus
        `"monitor"` and `"reduce_on_plateau": True` for plateau schedulers (the flag
        makes Lightning hand the metric to timm's plateau scheduler too). timm
        schedulers need the LightningModule's `lr_scheduler_step` to call
        `step_scheduler`.

    Raises:
        TypeError: If `max_epochs`, `steps_per_epoch` or `total_steps` is not an int,
            or `kwargs` holds a value of the wrong type.
        ValueError: If the name or a keyword argument is unknown, or a value is out of
            range (for example a warmup as long as the run).

    Examples:
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> config = create_scheduler("cosine", opt, max_epochs=100, steps_per_epoch=50, T_max=50, eta_min=1e-6)
        >>> config["interval"], config["scheduler"].T_max
        ('epoch', 50)
    """
    key = resolve_scheduler(name)
    check_number("max_epochs", max_epochs, low=1, integer=True)
    check_number("steps_per_epoch", steps_per_epoch, low=1, integer=True)
    if total_steps is None:
        total_steps = max_epochs * steps_per_epoch
    check_number("total_steps", total_steps, low=1, integer=True)
    check_scheduler_kwargs(key, kwargs)
    spec = _SPECS[key]
    options = dict(kwargs)
    extra: dict[str, Any] = {}
    if spec.monitor:
        monitor = options.pop("monitor", _DEFAULT_MONITOR)
        if not isinstance(monitor, str):
            raise TypeError(f"Expected `monitor` to be the name of a logged metric, but got {monitor!r}.")
        if not monitor:
            raise ValueError(f"Expected `monitor` to be the name of a logged metric, but got {monitor!r}.")
        # Lightning hands the metric to `lr_scheduler_step` (after validation) only with this flag.
        extra = {"monitor": monitor, "reduce_on_plateau": True}
    options = {**spec.defaults(optimizer, _Run(max_epochs, steps_per_epoch, total_steps)), **options}
    return {"scheduler": spec.build(optimizer, **options), "interval": spec.interval, "frequency": 1, **extra}


def set_schedule_length(scheduler: Any, *, total_steps: int, max_epochs: int) -> bool:
    """Stretch or shrink a running schedule so that it ends with a run of a new length.

    What `autotimm.callbacks.TimeBudget` calls once it knows how many epochs fit in the time
    budget. The schedule keeps its position (the steps already taken); from there it follows the
    schedule of the new length. Supported: `cosine_warmup` (its default warmup, 5% of the run,
    follows the new length; the next step's lr is set at once) and `cosineannealinglr`
    (`T_max` becomes `max_epochs`); other schedules are left as they are.

    Args:
        scheduler: The `"scheduler"` entry of a `create_scheduler` config.
        total_steps: Optimizer steps in the whole new run, >= 1.
        max_epochs: Epochs in the whole new run, >= 1.

    Returns:
        Whether the schedule was changed (`False` for a schedule this cannot change).

    Examples:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> config = create_scheduler("cosine_warmup", opt, max_epochs=100, steps_per_epoch=10)
        >>> set_schedule_length(config["scheduler"], total_steps=20, max_epochs=2)
        True
        >>> config["scheduler"].lr_lambdas[0].total
        20
    """
    check_number("total_steps", total_steps, low=1, integer=True)
    check_number("max_epochs", max_epochs, low=1, integer=True)
    if isinstance(scheduler, lr_scheduler.LambdaLR) and all(
        isinstance(f, _WarmupCosineFactor) for f in scheduler.lr_lambdas
    ):
        factors = [
            _WarmupCosineFactor(
                _default_warmup(total_steps) if f.default_warmup else min(f.warmup, total_steps - 1),
                total_steps,
                f.floor,
                f.default_warmup,
            )
            for f in scheduler.lr_lambdas
        ]
        scheduler.lr_lambdas = factors
        for group, base_lr, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, factors, strict=True):
            group["lr"] = base_lr * factor(scheduler.last_epoch)
        return True
    if isinstance(scheduler, lr_scheduler.CosineAnnealingLR):
        scheduler.T_max = max_epochs
        return True
    return False


def step_scheduler(
    scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | TimmScheduler,
    metric: float | torch.Tensor | None,
    *,
    epoch: int,
) -> None:
    """Advance `scheduler` once; what a LightningModule's `lr_scheduler_step` calls.

    timm schedulers are told the epoch that starts next (`epoch + 1`) and the metric;
    `ReduceLROnPlateau` gets the metric; every other torch scheduler just steps.

    Args:
        scheduler: The `"scheduler"` entry of a `create_scheduler` config.
        metric: The monitored metric's value (`None` when the config has no monitor).
        epoch: The current (0-based) epoch, `trainer.current_epoch`.

    Raises:
        ValueError: If a plateau scheduler gets no metric.

    Examples:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> config = create_scheduler("step", opt, max_epochs=3, steps_per_epoch=1)
        >>> opt.step()  # one epoch of training
        >>> step_scheduler(config["scheduler"], None, epoch=0)
        >>> round(opt.param_groups[0]["lr"], 6)
        0.01
    """
    plateau = isinstance(scheduler, (lr_scheduler.ReduceLROnPlateau, PlateauLRScheduler))
    if plateau and metric is None:
        raise ValueError(
            f"{type(scheduler).__name__} needs the monitored metric to step, but got None. "
            "Log the metric named by the config's `monitor` key."
        )
    if isinstance(scheduler, TimmScheduler):
        scheduler.step(epoch=epoch + 1, metric=metric)
    elif plateau:
        scheduler.step(metric)
    else:
        scheduler.step()
