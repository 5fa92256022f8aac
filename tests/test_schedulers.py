"""Tests for the scheduler registry in `autotimm.optim.schedulers`."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from timm.scheduler.scheduler import Scheduler as TimmScheduler
from torch import nn
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, TensorDataset

from autotimm.optim import (
    SCHEDULER_ALIASES,
    check_scheduler_kwargs,
    create_optimizer,
    create_scheduler,
    list_schedulers,
    resolve_scheduler,
    step_scheduler,
)

pytestmark = pytest.mark.filterwarnings("ignore:PlateauLRScheduler is deprecated:FutureWarning")

LISTED = list_schedulers()
ALL_NAMES = LISTED["torch"] + LISTED["timm"] + sorted(SCHEDULER_ALIASES)
MAX_EPOCHS, STEPS_PER_EPOCH, LR = 6, 5, 0.1


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Use one intra-op thread: the tensors are tiny, and on a busy CPU more threads stall for seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _optimizer() -> torch.optim.Optimizer:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    return torch.optim.SGD(model.parameters(), lr=LR)


def _run(config: dict, optimizer: torch.optim.Optimizer, metric: float | None = 1.0) -> list[float]:
    """Simulate the run; return the lr used at every optimizer step, then the final lr."""
    lrs = []
    for epoch in range(MAX_EPOCHS):
        for _ in range(STEPS_PER_EPOCH):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if config["interval"] == "step":
                step_scheduler(config["scheduler"], None, epoch=epoch)
        if config["interval"] == "epoch":
            step_scheduler(config["scheduler"], metric if "monitor" in config else None, epoch=epoch)
    lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_scheduler_runs(name: str) -> None:
    optimizer = _optimizer()
    config = create_scheduler(name, optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
    assert config["frequency"] == 1
    assert config["interval"] in ("epoch", "step")
    plateau = "plateau" in resolve_scheduler(name)
    assert ("monitor" in config) == plateau == config.get("reduce_on_plateau", False)

    lrs = _run(config, optimizer)  # a constant metric: plateau schedulers must wait for `patience`

    assert all(math.isfinite(v) and v >= 0 for v in lrs)
    if not plateau:
        assert len(set(lrs)) > 1, f"{name} never changed the lr: {lrs}"


def test_listing_and_aliases() -> None:
    assert {
        "steplr",
        "multisteplr",
        "exponentiallr",
        "cosineannealinglr",
        "cosineannealingwarmrestarts",
        "onecyclelr",
        "reducelronplateau",
        "linearlr",
        "polynomiallr",
        "cosine_warmup",
    } <= set(LISTED["torch"])
    expected_timm = {"timm_cosine", "timm_tanh", "timm_step", "timm_multistep", "timm_plateau", "timm_poly"}
    assert set(LISTED["timm"]) == expected_timm
    for names in LISTED.values():
        assert names == sorted(names)
    for alias, target in SCHEDULER_ALIASES.items():
        assert target in LISTED["torch"]
        assert alias not in LISTED["torch"] + LISTED["timm"]
        assert resolve_scheduler(alias.upper()) == target
    assert resolve_scheduler("CosineAnnealingLR") == "cosineannealinglr"
    assert resolve_scheduler("Timm_Cosine") == "timm_cosine"


@pytest.mark.parametrize(
    ("name", "interval", "scheduler_type"),
    [
        ("cosine_warmup", "step", lr_scheduler.LambdaLR),
        ("onecycle", "step", lr_scheduler.OneCycleLR),
        ("cosine", "epoch", lr_scheduler.CosineAnnealingLR),
        ("plateau", "epoch", lr_scheduler.ReduceLROnPlateau),
        ("timm_cosine", "epoch", TimmScheduler),
        ("timm_plateau", "epoch", TimmScheduler),
    ],
)
def test_interval_and_type(name: str, interval: str, scheduler_type: type) -> None:
    config = create_scheduler(name, _optimizer(), max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
    assert config["interval"] == interval
    assert isinstance(config["scheduler"], scheduler_type)


def test_run_derived_defaults() -> None:
    def build(name: str, **kwargs) -> object:
        return create_scheduler(name, _optimizer(), max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, **kwargs)[
            "scheduler"
        ]

    assert build("cosineannealinglr").T_max == MAX_EPOCHS
    assert build("cosineannealingwarmrestarts").T_0 == 2
    assert build("steplr").step_size == 2
    assert sorted(build("multisteplr").milestones) == [3, 5]
    assert build("exponentiallr").gamma ** MAX_EPOCHS == pytest.approx(0.01)
    assert build("polynomiallr").total_iters == MAX_EPOCHS
    linear = build("linearlr")
    assert (linear.start_factor, linear.end_factor, linear.total_iters) == (1.0, 0.0, MAX_EPOCHS)
    onecycle = build("onecyclelr")
    assert onecycle.total_steps == MAX_EPOCHS * STEPS_PER_EPOCH
    assert onecycle.optimizer.param_groups[0]["max_lr"] == LR
    assert build("reducelronplateau").mode == "min"
    assert build("timm_step").decay_t == 2
    assert build("timm_plateau").lr_scheduler.mode == "min"
    assert build("timm_cosine").t_initial == MAX_EPOCHS
    # user keyword arguments win
    assert build("steplr", step_size=1).step_size == 1
    assert build("onecyclelr", max_lr=0.5).optimizer.param_groups[0]["max_lr"] == 0.5
    assert build("timm_cosine", num_epochs=10).t_initial == 10


def test_doc_examples() -> None:
    config = create_scheduler(
        "cosineannealinglr", _optimizer(), max_epochs=100, steps_per_epoch=10, T_max=50, eta_min=1e-6
    )
    assert (config["scheduler"].T_max, config["scheduler"].eta_min) == (50, 1e-6)
    optimizer = _optimizer()
    config = create_scheduler(
        "multisteplr", optimizer, max_epochs=100, steps_per_epoch=10, milestones=[30, 60, 90], gamma=0.1
    )
    assert sorted(config["scheduler"].milestones) == [30, 60, 90]
    lrs = []
    for epoch in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        step_scheduler(config["scheduler"], None, epoch=epoch)
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01) and lrs[95] == pytest.approx(1e-4)


def test_cosine_warmup_shape() -> None:
    optimizer = _optimizer()
    config = create_scheduler(
        "cosine_warmup", optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, warmup_steps=5, eta_min=1e-3
    )
    lrs = _run(config, optimizer)
    assert lrs[:5] == pytest.approx([LR * (s + 1) / 5 for s in range(5)])  # linear rise to the base lr
    assert max(lrs) == pytest.approx(LR)
    decay = lrs[4:]
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))  # strictly down after the peak
    assert lrs[-1] == pytest.approx(1e-3)  # eta_min at the end of the run


def test_cosine_warmup_default_and_epoch_warmup() -> None:
    optimizer = _optimizer()
    total = MAX_EPOCHS * STEPS_PER_EPOCH
    config = create_scheduler("warmup_cosine", optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
    lrs = _run(config, optimizer)
    warmup = round(0.05 * total)  # 2 steps
    assert lrs[:warmup] == pytest.approx([LR * (s + 1) / warmup for s in range(warmup)])
    assert lrs[-1] == pytest.approx(0.0)

    optimizer = _optimizer()
    config = create_scheduler(
        "cosine_warmup", optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, warmup_epochs=1.0
    )
    lrs = _run(config, optimizer)
    assert lrs[STEPS_PER_EPOCH - 1] == pytest.approx(LR)
    assert lrs[STEPS_PER_EPOCH - 2] < LR


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warmup_steps": 30}, r"30 steps.*30 steps"),
        ({"warmup_steps": 45}, r"45 steps.*30 steps"),
        ({"warmup_epochs": 7}, r"35 steps.*30 steps"),
        ({"warmup_steps": 2, "warmup_epochs": 1}, "not both"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"eta_min": 0.5}, "eta_min"),
    ],
)
def test_cosine_warmup_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_scheduler("cosine_warmup", _optimizer(), max_epochs=MAX_EPOCHS, steps_per_epoch=5, **kwargs)


def test_plateau_monitor_and_decay() -> None:
    optimizer = _optimizer()
    config = create_scheduler("plateau", optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, patience=0)
    assert config["monitor"] == "val/loss"
    lrs = _run(config, optimizer, metric=1.0)  # never improves
    assert lrs[-1] < LR
    config = create_scheduler(
        "reducelronplateau", _optimizer(), max_epochs=3, steps_per_epoch=1, monitor="val/acc", mode="max"
    )
    assert (config["monitor"], config["scheduler"].mode) == ("val/acc", "max")

    optimizer = _optimizer()
    config = create_scheduler("timm_plateau", optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=1, patience_epochs=0)
    assert config["monitor"] == "val/loss"
    lrs = _run(config, optimizer, metric=1.0)
    assert lrs[-1] < LR


@pytest.mark.parametrize("name", ["plateau", "timm_plateau"])
def test_plateau_without_metric_raises(name: str) -> None:
    config = create_scheduler(name, _optimizer(), max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
    with pytest.raises(ValueError, match="monitored metric"):
        step_scheduler(config["scheduler"], None, epoch=0)


def test_unknown_name_lists_closest() -> None:
    with pytest.raises(ValueError, match="Expected `scheduler` to be one of .*, but got 'cosin'.*'cosine'"):
        resolve_scheduler("cosin")
    with pytest.raises(ValueError, match="timm_cosine"):
        create_scheduler("timm_cosin", _optimizer(), max_epochs=2, steps_per_epoch=2)
    with pytest.raises(TypeError):
        resolve_scheduler(3)  # type: ignore[arg-type]


def test_unknown_kwarg_lists_accepted() -> None:
    with pytest.raises(ValueError, match="'T_maxx'.*'T_max'") as info:
        create_scheduler("cosine", _optimizer(), max_epochs=2, steps_per_epoch=2, T_maxx=5)
    assert "eta_min" in str(info.value)
    with pytest.raises(ValueError, match="'warmup'") as info:
        check_scheduler_kwargs("cosine_warmup", {"warmup": 3})
    assert "warmup_steps" in str(info.value) and "warmup_epochs" in str(info.value)
    with pytest.raises(ValueError, match="`steps_per_epoch` cannot be set"):
        check_scheduler_kwargs("onecyclelr", {"steps_per_epoch": 3})
    with pytest.raises(ValueError, match="`sched` cannot be set"):
        check_scheduler_kwargs("timm_cosine", {"sched": "tanh"})
    with pytest.raises(ValueError, match="'monitor'"):
        check_scheduler_kwargs("cosine", {"monitor": "val/loss"})
    check_scheduler_kwargs("timm_cosine", {"min_lr": 1e-6, "warmup_epochs": 1})
    check_scheduler_kwargs("plateau", {"monitor": "val/acc", "mode": "max", "patience": 2})


@pytest.mark.parametrize(
    ("max_epochs", "steps_per_epoch", "error"), [(0, 5, ValueError), (6, 0, ValueError), (6.0, 5, TypeError)]
)
def test_bad_run_lengths(max_epochs: int, steps_per_epoch: int, error: type) -> None:
    with pytest.raises(error):
        create_scheduler("cosine", _optimizer(), max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)


@pytest.mark.parametrize("name", ["onecyclelr", "cosine_warmup"])
def test_total_steps_sets_the_length_of_step_schedules(name: str) -> None:
    optimizer = _optimizer()
    config = create_scheduler(name, optimizer, max_epochs=MAX_EPOCHS, steps_per_epoch=STEPS_PER_EPOCH, total_steps=7)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        step_scheduler(config["scheduler"], None, epoch=0)
    if name == "onecyclelr":
        assert config["scheduler"].total_steps == 7
        assert lrs[-1] == pytest.approx(LR / 25 / 1e4)  # the final lr at the last step
    else:
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # eta_min when the run ends
    # epoch-interval schedules keep following `max_epochs`
    assert (
        create_scheduler("cosine", _optimizer(), max_epochs=4, steps_per_epoch=5, total_steps=7)["scheduler"].T_max == 4
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"total_steps": 0}, ValueError, "Expected `total_steps` to be an int >= 1, but got 0"),
        ({"total_steps": 7.0}, TypeError, "Expected `total_steps` to be an int >= 1, but got float 7.0"),
        ({"max_epochs": float("inf")}, TypeError, "`max_epochs`.*inf"),
        ({"warmup_epochs": "1"}, TypeError, "`warmup_epochs`.*'1'"),
        ({"warmup_steps": 1.5}, TypeError, "`warmup_steps`.*1.5"),
        ({"eta_min": "0"}, TypeError, "`eta_min`.*'0'"),
        ({"eta_min": float("nan")}, ValueError, "`eta_min`.*nan"),
    ],
)
def test_bad_values_are_named(kwargs: dict, error: type, match: str) -> None:
    arguments = {"max_epochs": MAX_EPOCHS, "steps_per_epoch": STEPS_PER_EPOCH, **kwargs}
    with pytest.raises(error, match=match):
        create_scheduler("cosine_warmup", _optimizer(), **arguments)


def test_scheduler_kwargs_must_be_a_dict() -> None:
    with pytest.raises(TypeError, match="Expected `scheduler_kwargs` to be a dict, but got str 'x'"):
        check_scheduler_kwargs("cosine", "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`monitor`"):
        create_scheduler("plateau", _optimizer(), max_epochs=2, steps_per_epoch=2, monitor=3)


class _Regressor(pl.LightningModule):
    def __init__(self, scheduler: str) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))
        self.scheduler = scheduler
        self.lrs: list[float] = []

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.lrs.append(self.optimizers().param_groups[0]["lr"])
        return self._loss(batch)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self) -> dict:
        optimizer = create_optimizer("adamw", self, lr=1e-2, weight_decay=0.01)
        steps = self.trainer.estimated_stepping_batches // self.trainer.max_epochs
        config = create_scheduler(self.scheduler, optimizer, max_epochs=self.trainer.max_epochs, steps_per_epoch=steps)
        return {"optimizer": optimizer, "lr_scheduler": config}

    def lr_scheduler_step(self, scheduler: object, metric: object) -> None:
        step_scheduler(scheduler, metric, epoch=self.current_epoch)


@pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated")  # Lightning's own, unrelated to this test
@pytest.mark.parametrize("name", ["cosine_warmup", "onecyclelr", "reducelronplateau", "timm_cosine", "timm_plateau"])
def test_lightning_accepts_the_config(name: str, tmp_path) -> None:
    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    module = _Regressor(name)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=8))
    assert trainer.state.finished
    assert len(module.lrs) == 12 and all(math.isfinite(v) for v in module.lrs)
    if "plateau" not in name:
        assert len(set(module.lrs)) > 1
