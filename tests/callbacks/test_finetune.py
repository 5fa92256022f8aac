"""FineTune: frozen backbone for the first epochs, then all of it; the stage follows the epoch, also after resume."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from autotimm import AutoTrainer, BackboneConfig, FineTune, ImageClassifier


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32, generator=generator), torch.randint(0, 3, (16,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def _model(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3, **kwargs)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights and buffers (BatchNorm statistics too)."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


class Stages(pl.Callback):
    """What each training epoch did to the backbone and the head."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict[str, bool]] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: ImageClassifier) -> None:
        self._backbone, self._head = _snapshot(pl_module.backbone), _snapshot(pl_module.head)
        optimizer = trainer.optimizers[0]
        backbone_params = {id(p) for p in pl_module.backbone.parameters()}
        self._backbone_state = any(id(p) in backbone_params for p in optimizer.state)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.epochs[trainer.current_epoch] = {
            "frozen": pl_module.backbone_frozen,
            "backbone_training_mode": pl_module.backbone.training,
            "backbone_state_at_start": self._backbone_state,
            "backbone_at_start": self._backbone,
            "lrs": [group["lr"] for group in trainer.optimizers[0].param_groups],
        }

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: ImageClassifier) -> None:
        self.epochs[trainer.current_epoch].update(
            backbone_moved=not _same(self._backbone, _snapshot(pl_module.backbone)),
            head_moved=not _same(self._head, _snapshot(pl_module.head)),
        )


def _trainer(root: Path, max_epochs: int, stages: Stages, **kwargs) -> AutoTrainer:
    return AutoTrainer(
        max_epochs=max_epochs, accelerator="cpu", default_root_dir=root, callbacks=[stages], enable_progress_bar=False,
        enable_model_summary=False, run_record=False, plots=False, limit_val_batches=0, **kwargs,
    )  # fmt: skip


@pytest.mark.slow
def test_the_backbone_stays_fixed_while_frozen_and_trains_from_the_unfreeze_epoch(tmp_path: Path, one_thread) -> None:
    stages = Stages()
    model = _model(backbone_lr_scale=0.1, scheduler="cosineannealinglr")
    _trainer(tmp_path, 3, stages, fine_tune=2).fit(model, train_dataloaders=_loader())
    for epoch in (0, 1):
        assert stages.epochs[epoch]["frozen"] and not stages.epochs[epoch]["backbone_training_mode"]
        assert not stages.epochs[epoch]["backbone_moved"], f"epoch {epoch}: weights or BatchNorm statistics moved"
        assert stages.epochs[epoch]["head_moved"]
    last = stages.epochs[2]
    assert not last["frozen"] and last["backbone_training_mode"] and last["backbone_moved"] and last["head_moved"]
    # The scheduler moved every group, and the backbone kept its tenth of the head's rate.
    assert min(last["lrs"]) == pytest.approx(0.1 * last["lrs"][0]) and last["lrs"][0] < stages.epochs[0]["lrs"][0]


@pytest.mark.slow
def test_a_resumed_run_is_in_the_stage_of_its_epoch(tmp_path: Path, one_thread) -> None:
    # Saved after epoch 0 of 2 frozen ones: the resumed epoch 1 is still frozen.
    stages = Stages()
    trainer = _trainer(tmp_path / "a", 1, stages, fine_tune=2)
    with pytest.warns(UserWarning, match="stays frozen for the whole run"):
        trainer.fit(_model(backbone_lr_scale=0.1), train_dataloaders=_loader())
    frozen_checkpoint = trainer.checkpoint_callback.last_model_path
    saved = torch.load(frozen_checkpoint, weights_only=False)["state_dict"]

    stages = Stages()
    trainer = _trainer(tmp_path / "b", 3, stages, fine_tune=2)
    trainer.fit(_model(backbone_lr_scale=0.1), train_dataloaders=_loader(), ckpt_path=frozen_checkpoint)
    assert sorted(stages.epochs) == [1, 2]
    assert stages.epochs[1]["frozen"] and not stages.epochs[1]["backbone_moved"]
    assert not stages.epochs[2]["frozen"] and stages.epochs[2]["backbone_moved"]
    # Epoch 1 started from the checkpoint's backbone (and left it as it was).
    assert all(torch.equal(saved[f"backbone.{k}"], v) for k, v in stages.epochs[1]["backbone_at_start"].items())
    unfrozen_checkpoint = trainer.checkpoint_callback.last_model_path

    # Saved after the unfreeze: the resumed run trains the backbone from its first batch, and the
    # optimizer's state for the backbone (built in epoch 2) comes back with it.
    stages = Stages()
    trainer = _trainer(tmp_path / "c", 4, stages, fine_tune=2)
    trainer.fit(_model(backbone_lr_scale=0.1), train_dataloaders=_loader(), ckpt_path=unfrozen_checkpoint)
    assert sorted(stages.epochs) == [3]
    resumed = stages.epochs[3]
    assert not resumed["frozen"] and resumed["backbone_training_mode"] and resumed["backbone_moved"]
    assert resumed["backbone_state_at_start"]


def test_bad_input_names_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="freeze_epochs"):
        FineTune(freeze_epochs=0)
    with pytest.raises(TypeError, match="freeze_epochs"):
        FineTune(freeze_epochs=1.5)
    with pytest.raises(ValueError, match="fine_tune"):
        AutoTrainer(fine_tune=0, accelerator="cpu", default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="has one already"):
        AutoTrainer(fine_tune=1, callbacks=[FineTune()], accelerator="cpu", default_root_dir=tmp_path)


def test_a_task_frozen_for_good_refuses_a_staged_fine_tune(tmp_path: Path) -> None:
    trainer = pl.Trainer(max_epochs=2, callbacks=[FineTune(1)], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    with pytest.raises(ValueError, match="freeze_backbone=True"):
        trainer.fit(_model(freeze_backbone=True), train_dataloaders=_loader())


def test_a_module_that_is_not_a_task_is_refused(tmp_path: Path) -> None:
    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=1, callbacks=[FineTune(1)], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")  # fmt: skip
    with pytest.raises(TypeError, match="Plain"):
        trainer.fit(Plain(), train_dataloaders=DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))


# Lightning's DDP launcher starts the other rank by running this script again.
DDP_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from autotimm import AutoTrainer, BackboneConfig, ImageClassifier

    root, strategy = Path(sys.argv[1]), sys.argv[2]
    torch.manual_seed(0)
    images, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 3, (32,))
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3, backbone_lr_scale=0.1)
    seen = {}

    def totals(module):  # weights, and buffers (BatchNorm statistics, which each rank keeps)
        weights = sum(p.detach().double().sum().item() for p in module.parameters())
        return [weights, sum(b.double().sum().item() for b in module.buffers())]

    class Record(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["start"] = [False, *totals(pl_module.backbone)]

        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = [pl_module.backbone_frozen, *totals(pl_module.backbone)]

    trainer = AutoTrainer(
        max_epochs=2, fine_tune=1, accelerator="cpu", devices=2, strategy=strategy, default_root_dir=root,
        callbacks=[Record()], enable_progress_bar=False, enable_model_summary=False, run_record=False, plots=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(images, labels), batch_size=8))
    (root / f"rank{trainer.global_rank}.json").write_text(json.dumps(seen))
    """
)


@pytest.mark.slow
def test_ddp_ranks_share_the_stage_and_plain_ddp_is_told_what_to_use(tmp_path: Path) -> None:
    script = tmp_path / "finetune_ddp.py"
    script.write_text(DDP_SCRIPT)
    root = tmp_path / "run"
    root.mkdir()
    run = [sys.executable, str(script), str(root)]
    done = subprocess.run([*run, "ddp_find_unused_parameters_true"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    # The same stage, and the same backbone weights, on both ranks.
    assert [ranks[0][k][:2] for k in ranks[0]] == [ranks[1][k][:2] for k in ranks[1]]
    start, epoch_0, epoch_1 = ranks[0]["start"], ranks[0]["0"], ranks[0]["1"]
    assert epoch_0[0] and epoch_0[1:] == start[1:]  # weights and BatchNorm statistics untouched while frozen
    assert not epoch_1[0] and epoch_1[1] != epoch_0[1]

    done = subprocess.run([*run, "ddp"], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "ddp_find_unused_parameters_true" in done.stderr
