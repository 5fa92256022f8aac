"""Optimizer and learning-rate scheduler registries (torch and timm names)."""

from autotimm.optim.optimizers import check_optimizer_kwargs, create_optimizer, list_optimizers, resolve_optimizer
from autotimm.optim.param_groups import backbone_lr_scales, check_backbone_lr_options, scaled_param_groups
from autotimm.optim.schedulers import (
    SCHEDULER_ALIASES,
    check_scheduler_kwargs,
    create_scheduler,
    list_schedulers,
    resolve_scheduler,
    set_schedule_length,
    step_scheduler,
)

__all__ = [
    "SCHEDULER_ALIASES",
    "backbone_lr_scales",
    "check_backbone_lr_options",
    "check_optimizer_kwargs",
    "check_scheduler_kwargs",
    "create_optimizer",
    "create_scheduler",
    "list_optimizers",
    "list_schedulers",
    "resolve_optimizer",
    "resolve_scheduler",
    "scaled_param_groups",
    "set_schedule_length",
    "step_scheduler",
]
