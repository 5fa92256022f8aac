"""Each shim of `autotimm._compat` against the library it couples to: these fail when the library changes under it."""

from __future__ import annotations

import inspect
import re
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from autotimm._compat import (
    LightningCLIPrivateSteps,
    attached_trainer,
    compiled_in_place,
    instantiation_error,
    step_is_logged,
)

# ---- tasks / export slice ----------------------------------------------------------------


def test_attached_trainer_reads_what_the_public_property_sets(tmp_path) -> None:
    module = pl.LightningModule()
    with pytest.raises(RuntimeError, match="not attached"):
        _ = module.trainer  # why the shim exists: the public property refuses a detached module
    assert attached_trainer(module) is None
    trainer = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
    assert attached_trainer(nn.Linear(1, 1)) is None


# ---- trainer ---------------------------------------------------------------------------------


class _StepsWritten(Logger):
    """A logger that keeps the steps at which Lightning wrote metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    @property
    def name(self) -> str:
        return "steps"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "loss" in metrics:
            self.steps.append(step)


class _Linear(pl.LightningModule):
    """Logs its loss at every step and notes, before each step, what `step_is_logged` says."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.predicted: list[int] = []

    def on_train_batch_start(self, batch, batch_idx) -> None:
        if step_is_logged(self.trainer):
            self.predicted.append(self.global_step)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_step_is_logged_says_which_steps_the_loggers_get(tmp_path: Path) -> None:
    for every_n in (3, 1):
        model, logger = _Linear(), _StepsWritten()
        trainer = pl.Trainer(
            accelerator="cpu", max_epochs=2, log_every_n_steps=every_n, logger=logger, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2))
        assert model.predicted == logger.steps == list(range(every_n - 1, 10, every_n))


def test_compiled_in_place_tells_a_compiled_module() -> None:
    layer = torch.nn.Linear(2, 2)
    assert not compiled_in_place(layer)
    layer.compile()  # compiles lazily, at the first call
    assert compiled_in_place(layer)


# ---- cli -------------------------------------------------------------------------------------


def test_lightning_cli_still_runs_the_private_steps_the_mixin_routes():
    from pytorch_lightning.cli import LightningCLI

    source = inspect.getsource(LightningCLI.__init__)
    steps = [
        "self.parse_arguments(",
        "self._parse_ckpt_path()",
        "self._set_seed()",
        "self.before_instantiate_classes()",
    ]
    found = [source.find(step) for step in steps]
    assert -1 not in found, dict(zip(steps, found, strict=True))
    assert found == sorted(found)  # after parsing, before the classes are built
    for name in ("_parse_ckpt_path", "_set_seed"):
        assert list(inspect.signature(getattr(LightningCLI, name)).parameters) == ["self"]


def test_the_mixin_routes_the_seed_step_to_set_seed(make_image_folder, tmp_path):
    from pathlib import Path

    import torch

    from autotimm.cli import AutoTimmCLI

    assert issubclass(AutoTimmCLI, LightningCLIPrivateSteps)
    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "classify_folder.yaml"
    args = ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path)]
    args += ["--data.init_args.data_dir", str(make_image_folder())]
    args += ["--model.init_args.backbone.model_name", "test_resnet", "--trainer.seed", "1234"]
    cli = AutoTimmCLI(args, run=False)
    assert torch.initial_seed() == 1234  # `trainer.seed`, through `set_seed`
    assert "seed_everything" not in cli.config  # Lightning's `_set_seed` would have added it


class RefusesItsLr(pl.LightningModule):
    """A module whose `__init__` refuses its argument."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        raise ValueError(f"Expected `lr` to be > 0, but got {lr}.")


def test_jsonargparse_wraps_an_init_error_that_instantiation_error_unwraps():
    from pytorch_lightning.cli import LightningArgumentParser

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_lightning_class_args(pl.LightningModule, "model", subclass_mode=True)
    config = parser.parse_object({"model": {"class_path": f"{__name__}.RefusesItsLr", "init_args": {"lr": -1.0}}})
    with pytest.raises(ValueError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jsonargparse >= 4.49 deprecates the name that LightningCLI calls
        parser.instantiate_classes(config)
    assert not re.search(r"^Expected `lr`", str(info.value))  # jsonargparse's wrapper, not the error itself
    unwrapped = instantiation_error(info.value)
    assert isinstance(unwrapped, ValueError) and str(unwrapped) == "Expected `lr` to be > 0, but got -1.0."
    assert instantiation_error(ValueError("raised by autotimm")).args == ("raised by autotimm",)
