"""The shims of `autotimm._compat`: each test fails when the library changes under its shim."""

from __future__ import annotations

import inspect
import re
import warnings

import pytest
import pytorch_lightning as pl

from autotimm._compat import LightningCLIPrivateSteps, instantiation_error

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
