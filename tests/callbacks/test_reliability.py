"""Faults inflicted for real: SIGKILL and Ctrl-C on a training process, NaN losses, out-of-memory, bad checkpoints.

Each test checks what the user is left with: loadable checkpoints, a resumable run with the
right number of steps, a run record with the right status, and a clear error.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from autotimm import NonFiniteLossError, read_run
from autotimm.callbacks import AtomicCheckpointIO
from helpers import cpu_trainer

EPOCHS, BATCHES = 20, 8
JOB = Path("runs") / "job"  # the subprocess's run folder under its root

# A training script run in a subprocess: a model with a large weight matrix (so checkpoints
# take a while to write and a kill often lands mid-save), Adam and a step scheduler, random
# data; `resume` continues from the newest checkpoint.
SCRIPT = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path

    import pytorch_lightning as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from autotimm import AutoTrainer

    root = Path(sys.argv[1])

    class Big(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2048, 2048)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return (self.layer(x) - x).pow(2).mean()

        def on_train_start(self):
            (root / "started").touch()

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-4)
            return {{"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.9)}}

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn({BATCHES} * 16, 2048)), batch_size=16)
    trainer = AutoTrainer(
        max_epochs={EPOCHS}, accelerator="cpu", default_root_dir=root, run_name="job", enable_progress_bar=False,
        enable_model_summary=False,
    )
    # As a job restarted by a scheduler: the same run, resumed when it has a checkpoint.
    trainer.fit(Big(), data, ckpt_path="last" if (trainer.run_dir / "checkpoints" / "last.ckpt").exists() else None)
    """
)


def _launch(root: Path) -> subprocess.Popen:
    script = root / "train.py"
    script.write_text(SCRIPT)
    (root / "started").unlink(missing_ok=True)
    return subprocess.Popen(
        [sys.executable, str(script), str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the training process ended early: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _checkpoints_load(root: Path) -> list[dict]:
    loaded = [
        torch.load(path, map_location="cpu", weights_only=True) for path in (root / JOB / "checkpoints").glob("*.ckpt")
    ]
    for checkpoint in loaded:
        assert {"state_dict", "optimizer_states", "lr_schedulers", "loops"} <= set(checkpoint)
    return loaded


def _run_record(root: Path) -> dict:
    (run_dir,) = (root / "runs").iterdir()  # one run, however often it was resumed
    return read_run(run_dir)


def test_sigkill_at_any_moment_leaves_loadable_checkpoints_and_resume_finishes_the_run(tmp_path: Path) -> None:
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        process = _launch(tmp_path)
        # From the first checkpoint on, so every restart resumes the same run (before it, a restart
        # is a new run with its own record: nothing to resume from). How early that comes depends
        # on the machine's load, so it is waited for, not guessed.
        _wait_for(tmp_path / JOB / "checkpoints" / "last.ckpt", process)
        time.sleep(rng.uniform(0.1, 1.5))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read()[-2000:]
            break  # finished before the kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Whatever the moment of death, every checkpoint on disk is complete and loadable.
        _checkpoints_load(tmp_path)
        if _run_record(tmp_path)["status"] == "completed":
            break  # killed while shutting down after the last epoch
        record = _run_record(tmp_path)  # SIGKILL leaves no chance to write: the record says running, ...
        assert record["status"] == "lost" and record["alive"] is False  # ... and its reader sees the dead process
        kills += 1
    assert kills >= 2
    process = _launch(tmp_path)
    assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]

    last = torch.load(tmp_path / JOB / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # The same number of optimizer steps and epochs as an uninterrupted run, scheduler included.
    assert last["global_step"] == EPOCHS * BATCHES and last["epoch"] == EPOCHS - 1
    assert last["lr_schedulers"][0]["last_epoch"] == EPOCHS
    record = _run_record(tmp_path)
    assert record["status"] == "completed" and record["global_step"] == EPOCHS * BATCHES
    assert len(record["resumed_from"]) >= 1
    assert [e["epoch"] for e in record["epochs"]] == list(range(EPOCHS))  # each epoch once, in order
    assert not list((tmp_path / JOB / "checkpoints").glob(".*.tmp"))  # no half-written files left behind


def test_ctrl_c_marks_the_run_interrupted_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    process = _launch(tmp_path)
    _wait_for(tmp_path / JOB / "checkpoints" / "last.ckpt", process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) != 0
    record = _run_record(tmp_path)
    assert record["status"] == "interrupted" and record["ended_at"] and record["error"] is None
    assert record["checkpoints"]["last"] == str(tmp_path / JOB / "checkpoints" / "last.ckpt")
    assert torch.load(tmp_path / JOB / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] >= BATCHES


# --------------------------------------------------------------------------- in-process faults


class _CtrlCAfterFirstSave(CSVLogger):
    """Presses Ctrl-C at the narrowest moment: the first checkpoint is on disk, the save not yet returned."""

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_just_after_the_first_checkpoint_lands_still_records_it(tmp_path: Path) -> None:
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C while it shuts down
    trainer = cpu_trainer(tmp_path, max_epochs=3, logger=_CtrlCAfterFirstSave(tmp_path))
    try:
        with pytest.raises(SystemExit):
            trainer.fit(Regression(), _regression_data())
    finally:
        signal.signal(signal.SIGINT, handler)
    record = read_run(trainer.run_dir)
    assert record["status"] == "interrupted" and record["checkpoints"]["last"] is not None
    last = Path(record["checkpoints"]["last"])
    assert last.name == "last.ckpt" and torch.load(last, weights_only=True)["epoch"] == 0


class Regression(pl.LightningModule):
    """A linear regression whose loss turns NaN from optimizer step `nan_from_step` on (if given)."""

    def __init__(self, nan_from_step: int | None = None, oom_above_batch_size: int | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.nan_from_step = nan_from_step
        self.oom_above_batch_size = oom_above_batch_size
        self.lr = 0.05

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.oom_above_batch_size is not None and len(x) > self.oom_above_batch_size:
            # What CUDA raises when a batch does not fit (the fault, injected on the CPU).
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} MiB")
        loss = nn.functional.mse_loss(self.layer(x).squeeze(1), y)
        if self.nan_from_step is not None and self.global_step >= self.nan_from_step:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _regression_data(n: int = 64, batch_size: int = 16) -> DataLoader:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])), batch_size=batch_size)


def test_nan_loss_stops_at_once_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = Regression(nan_from_step=6)  # 4 batches per epoch: the first NaN is at epoch 1, step 6
    trainer = cpu_trainer(tmp_path, max_epochs=5)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 6 \(batch 2\)") as raised:
        trainer.fit(model, _regression_data())
    message = str(raised.value)
    assert "learning rate (now 0.05)" in message and "gradient_clip_val=1.0" in message
    assert "stop_on_nonfinite_loss=False" in message and "last.ckpt" in message
    # Stopped before the bad loss reached the weights; the checkpoint of epoch 0 is intact and finite.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    last = torch.load(trainer.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    record = read_run(trainer.run_dir)
    assert record["status"] == "failed" and record["error"]["type"] == "NonFiniteLossError"
    assert "epoch 1, step 6" in record["error"]["message"]


def test_nan_guard_can_be_turned_off(tmp_path: Path) -> None:
    trainer = cpu_trainer(tmp_path, max_epochs=2, stop_on_nonfinite_loss=False)
    trainer.fit(Regression(nan_from_step=2), _regression_data())
    assert trainer.global_step == 8 and read_run(trainer.run_dir)["status"] == "completed"


class RegressionData(pl.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        return _regression_data(batch_size=self.batch_size)


def test_out_of_memory_before_the_first_step_halves_the_batch_size_and_retries(tmp_path: Path) -> None:
    data = RegressionData(batch_size=32)
    trainer = cpu_trainer(tmp_path, max_epochs=2, oom_backoff=True)
    with pytest.warns(UserWarning, match=r"batch_size=32.*retrying with batch_size=16") as warned:
        trainer.fit(Regression(oom_above_batch_size=8), datamodule=data)
    assert data.batch_size == 8 and data.hparams["batch_size"] == 8
    assert any("batch_size=16" in str(w.message) and "batch_size=8" in str(w.message) for w in warned)
    assert trainer.global_step == 2 * 64 // 8  # both epochs, at the batch size that fits
    assert read_run(trainer.run_dir)["config"]["data"]["hparams"]["batch_size"] == 8


def test_out_of_memory_is_raised_when_backing_off_is_not_safe(tmp_path: Path) -> None:
    # Off by default on the CPU.
    with pytest.raises(torch.OutOfMemoryError):
        cpu_trainer(tmp_path / "a", max_epochs=1).fit(Regression(oom_above_batch_size=8), datamodule=RegressionData(32))
    # Batch size 1 cannot be halved.
    with pytest.raises(torch.OutOfMemoryError):
        cpu_trainer(tmp_path / "b", max_epochs=1, oom_backoff=True).fit(
            Regression(oom_above_batch_size=0), datamodule=RegressionData(1)
        )


def test_bad_ckpt_path_is_refused_before_training(tmp_path: Path) -> None:
    garbage = tmp_path / "model.ckpt"
    garbage.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match=r"model.ckpt.*not a PyTorch checkpoint.*1000 bytes"):
        cpu_trainer(tmp_path).fit(Regression(), _regression_data(), ckpt_path=garbage)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        cpu_trainer(tmp_path).fit(Regression(), _regression_data(), ckpt_path=tmp_path / "missing.ckpt")


def test_a_checkpoint_monitor_that_is_never_logged_fails_before_training(digits_data, backbone, tmp_path: Path) -> None:
    from autotimm import ImageClassifier

    model = ImageClassifier(backbone, num_classes=10)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = cpu_trainer(tmp_path, max_epochs=1, checkpoint_monitor="val/acc")
    with pytest.raises(
        ValueError, match=r"val/acc.*never logged.*'val/accuracy', 'val/loss'.*Did you mean 'val/accuracy'"
    ):
        trainer.fit(model, datamodule=digits_data)
    assert trainer.global_step == 0  # found by the sanity check, before any training step
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_durable_checkpoints_are_flushed_and_load(tmp_path: Path) -> None:
    # fsync on request; the user's plugin replaces the default one.
    trainer = cpu_trainer(tmp_path, max_epochs=2, plugins=[AtomicCheckpointIO(durable=True)])
    trainer.fit(Regression(), _regression_data())
    assert trainer.strategy.checkpoint_io.durable
    last = torch.load(trainer.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 8
    assert [p.name for p in (trainer.run_dir / "checkpoints").iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_written_files_get_the_mode_a_plain_open_would_give(digits_data, backbone, tmp_path: Path) -> None:
    # Checkpoints, the run record, the confusion matrix's data and an ONNX file: readable by the
    # group as the umask allows, as `open(path, "w")` makes them (not mkstemp's 0600).
    from autotimm import ImageClassifier

    umask = 0o027  # group may read, others nothing: 0o640
    old = os.umask(umask)
    try:
        model = ImageClassifier(backbone, num_classes=10)
        trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, plots=True)
        trainer.fit(model, datamodule=digits_data)
        written = [
            trainer.run_dir / "checkpoints" / "last.ckpt",
            trainer.run_dir / "run.json",
            trainer.run_dir / "metrics.json",
            trainer.run_dir / "plots" / "confusion_matrix.json",
        ]
        if importlib.util.find_spec("onnxruntime") is not None:
            written.append(model.to_onnx(tmp_path / "model.onnx"))
        plain = tmp_path / "plain.txt"
        plain.write_text("")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    assert modes == {path.name: oct(expected) for path in written}


class _SeesFailures(Callback):
    """A user's callback that notes every exception Lightning reports to callbacks, and the model's mode in training."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []
        self.modes: set[bool] = set()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        self.modes.add(pl_module.training)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.exceptions.append(exception)


class _StatusLogger(CSVLogger):
    """A CSV logger that keeps the status each `finalize` gets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.statuses: list[str] = []

    def finalize(self, status: str) -> None:
        self.statuses.append(status)
        super().finalize(status)


class _ValidatedRegressionData(RegressionData):
    def val_dataloader(self) -> DataLoader:
        return _regression_data(n=32, batch_size=self.batch_size)


class _ValidatedRegression(Regression):
    """`Regression` whose training step runs out of memory above batch size 8 and its validation step above 5."""

    def __init__(self) -> None:
        super().__init__(oom_above_batch_size=8)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if len(x) > 5:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} MiB")
        self.log("val/loss", nn.functional.mse_loss(self.layer(x).squeeze(1), y))


def test_out_of_memory_back_off_is_tried_before_the_run_so_nothing_sees_a_failure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ValidatedRegression()
    reference = copy.deepcopy(model)
    user, logger = _SeesFailures(), _StatusLogger(tmp_path / "logs")
    data = _ValidatedRegressionData(batch_size=32)
    trainer = cpu_trainer(tmp_path / "backed-off", max_epochs=2, oom_backoff=True, callbacks=[user], logger=logger)
    with pytest.warns(UserWarning, match=r"batch_size=8.*retrying with batch_size=4"):  # the validation step's
        trainer.fit(model, datamodule=data)
    assert data.batch_size == 4
    assert trainer.global_step == 2 * 64 // 4  # both epochs, at the batch size that fits, and no step more
    assert user.exceptions == [] and "failed" not in logger.statuses
    assert user.modes == {True}  # not left in eval mode by the failed validation step
    record = read_run(trainer.run_dir)
    assert record["status"] == "completed" and record["error"] is None
    assert record["config"]["data"]["hparams"]["batch_size"] == 4
    # The failed tries left no trace: the same run started at batch size 4 ends with the same weights.
    plain = cpu_trainer(tmp_path / "plain", max_epochs=2, oom_backoff=False)
    plain.fit(reference, datamodule=_ValidatedRegressionData(batch_size=4))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters(), strict=True))
