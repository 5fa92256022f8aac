"""One folder per run and its lifecycle, against real short fits: what a script, a GUI and a cron job see on disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint

from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, LoggerConfig, TunerConfig, read_run, summarize
from autotimm.cli import AutoTimmCLI, main
from autotimm.runs import Run, RunLock, RunLockedError, RunRecordError
from helpers import QUICK, colour_folder, cpu_trainer, noise_data

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_run_has_one_folder_with_everything_in_it(make_image_folder, backbone, tmp_path: Path) -> None:
    data = noise_data(make_image_folder)
    trainer = cpu_trainer(
        tmp_path / "out",
        runs_dir=tmp_path / "out" / "experiments",
        checkpoint_monitor="val/accuracy",
        logger=[LoggerConfig("csv"), LoggerConfig("tensorboard")],
        profiler="simple",
        plots=True,
        max_epochs=2,
        limit_train_batches=2,
        num_sanity_val_steps=0,
    )
    run_dir = trainer.run_dir
    assert run_dir.parent == tmp_path / "out" / "experiments" and run_dir.is_dir()  # before training
    assert read_run(run_dir)["status"] == "pending"

    model = ImageClassifier(backbone, num_classes=3)
    trainer.fit(model, datamodule=data)
    trainer.test(model, dataloaders=data.val_dataloader())

    files = _files(run_dir)
    assert {"checkpoints/best.ckpt", "checkpoints/last.ckpt", "run.json", "metrics.json", "config.yaml"} <= files
    assert {"train.log", "logs/csv/metrics.csv", "profiler/fit-simple.txt", "plots/loss.png"} <= files
    assert any(f.startswith("logs/tensorboard/events.out.tfevents") for f in files)
    assert os.listdir(tmp_path / "out") == ["experiments"]  # nothing of the run outside its folder
    assert "autotimm: run " in (run_dir / "train.log").read_text()

    run = Run(run_dir)
    assert run.status == "completed" and run.name == run_dir.name
    assert run.checkpoints == {"best": run_dir / "checkpoints/best.ckpt", "last": run_dir / "checkpoints/last.ckpt"}
    assert run.best["monitor"] == "val/accuracy" and run.best["value"] == max(e["val/accuracy"] for e in run.metrics)
    assert run.test["metrics"]["test/accuracy"] >= 0 and run.test["checkpoint"] == str(run.checkpoints["best"])
    assert all(e["images_per_s"] > 0 and e["peak_memory_mb"] > 0 for e in run.metrics)
    assert summarize(tmp_path / "out", print_table=False)[0]["test/accuracy"] == run.test["metrics"]["test/accuracy"]

    # config.yaml is what `autotimm fit --config` reads: the same model, data and trainer settings.
    assert run.config["model"]["init_args"]["num_classes"] == 3
    cli = AutoTimmCLI(["--config", str(run_dir / "config.yaml")], run=False)
    assert cli.trainer.checkpoint_monitor == "val/accuracy" and cli.trainer.run_dir != run_dir
    assert dict(cli.model.hparams) == dict(model.hparams)
    assert Path(cli.datamodule.data_dir) == Path(data.data_dir)


def test_fresh_names_and_the_folder_when_resuming(make_image_folder, backbone, tmp_path: Path) -> None:
    data = noise_data(make_image_folder)
    first = cpu_trainer(tmp_path, **QUICK)
    second = cpu_trainer(tmp_path, **QUICK)
    assert first.run_dir != second.run_dir and first.run_dir.parent == tmp_path / "runs"
    first.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()

    # The same name again: refused, nothing of the first run touched.
    again = cpu_trainer(tmp_path, run_name=first.run_name, **QUICK)
    with pytest.raises(FileExistsError, match=rf"Run '{first.run_name}' exists.*completed.*ckpt_path='last'"):
        again.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert last.read_bytes() == before

    # Resuming it with its folder continues the same run, in the same folder.
    resumed = cpu_trainer(tmp_path, run_dir=first.run_dir, **{**QUICK, "max_epochs": 2})
    resumed.fit(ImageClassifier(backbone, num_classes=3), datamodule=data, ckpt_path="last")
    record = read_run(first.run_dir)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [0, 1]
    assert record["resumed_from"][0]["checkpoint"] == str(last)
    assert torch.load(last, weights_only=True)["epoch"] == 1
    # The never-started second trainer left a pending run, which a later `fit` may still start.
    assert read_run(second.run_dir)["status"] == "pending"


def test_a_users_checkpoint_callback_writes_into_the_run_folder(make_image_folder, backbone, tmp_path: Path) -> None:
    mine = ModelCheckpoint(filename="model-{epoch}", save_top_k=-1, save_last=True)
    trainer = cpu_trainer(tmp_path, callbacks=[mine], **{**QUICK, "max_epochs": 2})
    trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=noise_data(make_image_folder))
    names = sorted(p.name for p in (trainer.run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "model-epoch=0.ckpt", "model-epoch=1.ckpt"]
    assert read_run(trainer.run_dir)["checkpoints"]["last"] == str(trainer.run_dir / "checkpoints" / "last.ckpt")


class _FailingSetup(ImageDataModule):
    def setup(self, stage: str | None = None) -> None:
        raise ValueError("labels.csv names 3 images that are not there")


class _FailingStep(ImageClassifier):
    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        raise RuntimeError("shape mismatch in the first step")


def test_failures_anywhere_are_recorded_and_a_retry_links_to_them(make_image_folder, backbone, tmp_path: Path) -> None:
    root = make_image_folder(classes={"cat": 6, "dog": 6, "fox": 6}, splits=("train", "val"), size=32)
    failing = _FailingSetup(root, image_size=32, batch_size=4, num_workers=0)
    trainer = cpu_trainer(tmp_path, **QUICK)
    with pytest.raises(ValueError, match="labels.csv"):
        trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=failing)
    error = Run(trainer.run_dir).error
    assert read_run(trainer.run_dir)["status"] == "failed"
    assert error["type"] == "ValueError" and error["stage"] == "setup" and "labels.csv" in error["message"]

    data = noise_data(make_image_folder)
    stepping = cpu_trainer(tmp_path, **QUICK)
    with pytest.raises(RuntimeError, match="first step"):
        stepping.fit(_FailingStep(backbone, num_classes=3), datamodule=data)
    error = Run(stepping.run_dir).error
    assert error["stage"] == "train" and error["step"] == 0 and "training_step" in error["traceback"]

    retry = cpu_trainer(tmp_path, retry_of=stepping.run_dir, **QUICK)
    retry.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    record = read_run(retry.run_dir)
    assert record["status"] == "completed" and retry.run_dir != stepping.run_dir
    assert record["retry_of"] == {"run": stepping.run_name, "run_dir": str(stepping.run_dir), "status": "failed"}
    statuses = {row["run_id"]: row["status"] for row in summarize(tmp_path, print_table=False)}
    assert statuses == {trainer.run_name: "failed", stepping.run_name: "failed", retry.run_name: "completed"}


@pytest.mark.slow
def test_tuning_outcome_and_failure_are_recorded_with_one_curve(make_image_folder, backbone, tmp_path: Path) -> None:
    data = ImageDataModule(colour_folder(make_image_folder), image_size=32, batch_size=8, num_workers=0)
    tuned = cpu_trainer(tmp_path, tuner_config=TunerConfig(auto_lr=True, auto_batch_size=False), plots=True, **QUICK)
    tuned.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    record = read_run(tuned.run_dir)
    assert record["tuning"]["lr"] > 0 and record["tuning"]["lr_find_curve"] == str(
        tuned.run_dir / "plots/lr_finder.json"
    )
    curves = [p for p in tmp_path.rglob("*.json") if "lr_find" in p.name]
    assert curves == [tuned.run_dir / "plots" / "lr_finder.json"]  # one copy

    # A finder whose whole range diverges cannot suggest anything: the run fails in tuning, and says so.
    hopeless = TunerConfig(auto_lr=True, auto_batch_size=False, lr_find_kwargs={"min_lr": 1e2, "max_lr": 1e4})
    failing = cpu_trainer(tmp_path, tuner_config=hopeless, **QUICK)
    with pytest.raises(Exception, match="learning-rate finder"):
        failing.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    record = read_run(failing.run_dir)
    assert record["status"] == "failed" and record["error"]["stage"] == "tuning"
    assert "learning-rate finder" in record["tuning"]["error"] and record["epochs"] == []


def test_a_pending_run_started_later_by_a_background_thread(make_image_folder, backbone, tmp_path: Path) -> None:
    data = noise_data(make_image_folder)
    trainer = cpu_trainer(tmp_path, run_name="gui-run", **QUICK)
    assert Run(trainer.run_dir).status == "pending"
    # Another process (a GUI's worker) may start the pending run by its name.
    worker = cpu_trainer(tmp_path, run_name="gui-run", **QUICK)
    thread = threading.Thread(
        target=worker.fit, args=(ImageClassifier(backbone, num_classes=3),), kwargs={"datamodule": data}
    )
    thread.start()
    thread.join(timeout=300)
    run = Run(tmp_path / "runs" / "gui-run")
    assert run.status == "completed" and run.record["created_at"] <= run.record["started_at"]
    assert "autotimm: run gui-run" in (run.path / "train.log").read_text()


def test_exclusive_runs_one_at_a_time(make_image_folder, backbone, tmp_path: Path) -> None:
    data = noise_data(make_image_folder)
    other = RunLock(tmp_path / "runs")
    other.acquire({"run": "night-job", "started_at": "2026-12-05T01:00:00+00:00"})
    trainer = cpu_trainer(tmp_path, exclusive=True, **QUICK)
    with pytest.raises(RunLockedError, match=r"night-job.*started 2026-12-05T01:00:00"):
        trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert read_run(trainer.run_dir)["status"] == "pending" and trainer.global_step == 0
    other.release()
    trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=data)
    assert read_run(trainer.run_dir)["status"] == "completed" and not RunLock(tmp_path / "runs").holder()


_HOLD_LOCK = """
import sys, time
sys.path.insert(0, {src!r})
from autotimm.runs import RunLock
lock = RunLock(sys.argv[1])  # held while the object lives
lock.acquire({{"run": "killed", "started_at": "then"}})
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_a_killed_runs_lock_is_taken_over(tmp_path: Path) -> None:
    script = tmp_path / "hold.py"
    script.write_text(_HOLD_LOCK.format(src=SRC))
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match="'killed'"):
            RunLock(tmp_path).acquire({"run": "second"})
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    lock = RunLock(tmp_path)
    lock.acquire({"run": "third"})  # the stale lock of the killed process is taken over
    assert lock.held and lock.holder()["run"] == "third"
    lock.release()


_TRAIN_SLOWLY = """
import sys, time
sys.path.insert(0, {src!r})
from autotimm import AutoTrainer, ImageClassifier, ImageDataModule, BackboneConfig

class Slow(ImageClassifier):
    def training_step(self, batch, batch_idx):
        time.sleep(0.5)
        return super().training_step(batch, batch_idx)

data = ImageDataModule(sys.argv[2], image_size=32, batch_size=4, num_workers=0)
trainer = AutoTrainer(accelerator="cpu", default_root_dir=sys.argv[1], run_name="doomed", max_epochs=100,
                      enable_progress_bar=False, plots=False)
trainer.fit(Slow(BackboneConfig("test_resnet", pretrained=False), num_classes=3), datamodule=data)
"""


@pytest.mark.slow
def test_a_killed_run_reads_as_lost(make_image_folder, tmp_path: Path) -> None:
    root = make_image_folder(classes={"cat": 6, "dog": 6, "fox": 6}, splits=("train", "val"), size=32)
    script = tmp_path / "train.py"
    script.write_text(_TRAIN_SLOWLY.format(src=SRC))
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "out"), str(root)])
    run_dir = tmp_path / "out" / "runs" / "doomed"
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.json").is_file():  # running, one epoch done
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        record = read_run(run_dir)
        assert record["status"] == "running" and record["alive"] is True and record["pid"] == process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    record = read_run(run_dir)
    assert record["status"] == "lost" and record["alive"] is False
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # the file is not changed
    assert summarize(tmp_path / "out", print_table=False)[0]["status"] == "lost"


def test_bad_places_and_names_for_runs(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match="taken"):
        AutoTrainer(default_root_dir=tmp_path, runs_dir=tmp_path / "taken" / "runs")
    with pytest.raises(ValueError, match="'a/b'"):
        AutoTrainer(default_root_dir=tmp_path, run_name="a/b")
    with pytest.raises(TypeError, match="run_name"):
        AutoTrainer(default_root_dir=tmp_path, run_name=3)
    with pytest.raises(ValueError, match="either `run_dir`"):
        AutoTrainer(default_root_dir=tmp_path, run_dir=tmp_path / "r", run_name="x")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AutoTrainer(default_root_dir=tmp_path, retry_of=tmp_path / "nowhere")
    with pytest.raises(TypeError, match="exclusive"):
        AutoTrainer(default_root_dir=tmp_path, exclusive="yes")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.skipif(not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0, reason="needs /sys")
def test_a_runs_dir_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    with pytest.raises(PermissionError, match="/sys/autotimm-runs"):
        AutoTrainer(default_root_dir=tmp_path, runs_dir="/sys/autotimm-runs")


def test_a_corrupt_record_is_reported_and_never_overwritten(make_image_folder, backbone, tmp_path: Path) -> None:
    trainer = cpu_trainer(tmp_path, **QUICK)
    trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=noise_data(make_image_folder))
    broken = tmp_path / "runs" / "broken"
    broken.mkdir()
    (broken / "run.json").write_text('{"status": "runn')
    with pytest.raises(RunRecordError, match=r"broken/run.json.*not valid JSON"):
        read_run(broken)
    with pytest.raises(RunRecordError, match="broken"):
        AutoTrainer(default_root_dir=tmp_path, run_name="broken")
    with pytest.warns(UserWarning, match="not valid JSON"):
        rows = summarize(tmp_path, print_table=False)
    assert {row["run_id"]: row["status"] for row in rows} == {trainer.run_name: "completed", "broken": "corrupt"}
    assert (broken / "run.json").read_text() == '{"status": "runn'


def test_summarize_and_the_runs_command_find_runs_at_any_depth(
    make_image_folder, backbone, tmp_path: Path, capsys
) -> None:
    trainer = cpu_trainer(tmp_path / "a", checkpoint_monitor="val/accuracy", **QUICK)
    trainer.fit(ImageClassifier(backbone, num_classes=3), datamodule=noise_data(make_image_folder))
    nested = tmp_path / "sweep" / "lr-0.1" / "runs" / "copy"
    shutil.copytree(trainer.run_dir, nested)
    rows = summarize(tmp_path, print_table=False)
    assert sorted(row["run_id"] for row in rows) == sorted([trainer.run_name, trainer.run_name])
    assert len(summarize(tmp_path / "sweep", print_table=False)) == 1

    capsys.readouterr()
    main(["runs", "list", str(tmp_path)])
    listed = capsys.readouterr().out
    assert listed.splitlines()[0].split()[:3] == ["run_id", "status", "epochs"] and listed.count("completed") == 2
    main(["runs", "show", trainer.run_name, "--dir", str(tmp_path / "a")])
    shown = capsys.readouterr().out
    assert "status       completed" in shown and str(trainer.run_dir / "checkpoints" / "best.ckpt") in shown
    assert "val/accuracy" in shown.split("\n\n")[1]  # then the epochs
    with pytest.raises(SystemExit, match="no run 'nope'"):
        main(["runs", "show", "nope", "--dir", str(tmp_path)])
    assert yaml.safe_load((trainer.run_dir / "config.yaml").read_text())["trainer"]["checkpoint_monitor"]
