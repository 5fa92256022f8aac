"""The example scripts and the quickstart notebook run end to end in smoke mode (`AUTOTIMM_SMOKE=1` shrinks
data and epochs), and each produces what it is there to show."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autotimm import read_run
from autotimm.runs import find_runs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _smoke_env() -> dict[str, str]:
    # One thread per process: the examples' models are tiny, and on a shared 2-core machine
    # two OpenMP threads per process can make each step seconds slower instead of faster.
    return {"OMP_NUM_THREADS": "1", **os.environ, "AUTOTIMM_SMOKE": "1", "PYTHONUNBUFFERED": "1"}


def _run(script: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=cwd, env=_smoke_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _number(pattern: str, text: str) -> float:
    """The number captured by the first group of `pattern` in `text`."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in the output:\n{text[-3000:]}"
    return float(match.group(1))


def _hparams(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]


def test_quickstart(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("quickstart.py", tmp_path)
    assert "test accuracy:" in out
    assert list((tmp_path / "runs" / "quickstart").rglob("*.ckpt"))


def test_full_training_example(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("full_training_example.py", tmp_path)
    assert "learning rate found by the tuner:" in out and "test accuracy:" in out
    assert list((tmp_path / "runs" / "full_training_example").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "runs" / "full_training_example").rglob("last.ckpt"))


def test_custom_folder_predicts_the_top_class_of_each_new_image(tmp_path):
    out = _run("custom_folder.py", tmp_path)
    assert "classes (label order): ['circle', 'square', 'triangle']" in out
    predictions = re.findall(r"^  (\w+)_\d\.jpg: (\w+) \((0\.\d\d|1\.00)\)$", out, flags=re.MULTILINE)
    assert len(predictions) == 6
    assert {true for true, _, _ in predictions} == {"circle", "square", "triangle"}
    assert all(predicted in ("circle", "square", "triangle") for _, predicted, _ in predictions)
    assert "test accuracy:" in out


def test_auto_tuning_applies_the_batch_size_and_learning_rate_it_found(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("auto_tuning.py", tmp_path)
    found = re.search(r"batch size found: (\d+) \(data.batch_size is now (\d+)\)", out)
    assert found and found.group(1) == found.group(2)
    lr = _number(r"learning rate found: ([\d.e-]+)", out)
    assert 1e-6 <= lr <= 1.0
    (curve_file,) = (tmp_path / "runs" / "auto_tuning").rglob("lr_find*.json")  # one copy, in the run's plots/
    curve = json.loads(curve_file.read_text())
    assert curve_file.parent.name == "plots"
    assert curve["suggestion"] == pytest.approx(lr, rel=1e-2) and len(curve["lr"]) >= 8


def test_two_phase_detection_trains_frozen_then_unfrozen(tmp_path):
    out = _run("two_phase_detection.py", tmp_path)
    assert 0 <= _number(r"val mAP after phase 1 \(frozen backbone\): ([\d.]+)", out) <= 1
    assert 0 <= _number(r"val mAP after phase 2 \(whole model\): ([\d.]+)", out) <= 1
    root = tmp_path / "runs" / "two_phase_detection"
    phase1 = _hparams(next((root / "phase1").rglob("checkpoints/last.ckpt")))
    phase2 = _hparams(next((root / "phase2").rglob("checkpoints/best.ckpt")))
    assert phase1["freeze_backbone"] is True and phase1["lr"] == 1e-3
    assert phase2["freeze_backbone"] is False and phase2["lr"] == 1e-4


@pytest.mark.slow
def test_detection_yolo_trains_from_a_yolo_folder(tmp_path):
    out = _run("detection_yolo.py", tmp_path)
    assert "format: yolo, classes: ['circle', 'square', 'triangle']" in out
    assert 0 <= _number(r"val mAP: ([\d.]+)", out) <= 1
    assert (tmp_path / "data" / "yolo_shapes_smoke" / "labels" / "train").is_dir()
    (best,) = (tmp_path / "runs" / "detection_yolo").rglob("checkpoints/best.ckpt")
    assert _hparams(best)["num_classes"] == 3


def test_transformer_backbone_detector_uses_a_vit_small_batches_and_clipping(tmp_path):
    out = _run("transformer_backbone.py", tmp_path)
    assert "batch size 8" in out and "gradient clipping: 1.0" in out
    assert 0 <= _number(r"val mAP: ([\d.]+)", out) <= 1
    (best,) = (tmp_path / "runs" / "transformer_backbone").rglob("checkpoints/best.ckpt")
    hparams = _hparams(best)
    assert hparams["backbone"]["model_name"] == "test_vit" and hparams["scheduler"] == "cosineannealinglr"


def test_multiple_loggers_write_csv_and_tensorboard(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("multiple_loggers.py", tmp_path)
    root = tmp_path / "runs" / "multiple_loggers"
    (csv_file,) = root.rglob("metrics.csv")
    header = csv_file.read_text().splitlines()[0].split(",")
    assert {"val/accuracy", "val/f1", "train/lr", "train/grad_norm"} <= set(header)
    assert list(root.rglob("logs/tensorboard/events.out.tfevents.*"))
    assert "CSVLogger wrote to" in out and "TensorBoardLogger wrote to" in out
    assert out.count("  epoch ") == 2  # one val/accuracy row per epoch read back from the CSV


def test_resume_training_continues_the_step_count(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("resume_training.py", tmp_path)
    stopped = _number(r"first run stopped after 2 of 4 epochs, at step (\d+)", out)
    resumed = _number(r"resumed from step (\d+);", out)
    finished = _number(r"finished at step (\d+)", out)
    assert stopped > 0 and resumed == stopped and finished == 2 * stopped
    assert "same run record: True" in out


def test_ddp_cpu_trains_on_two_processes_and_prints_once(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("ddp_cpu.py", tmp_path)
    assert out.count("processes: 2 (DDPStrategy") == 1  # rank 0 only
    root = tmp_path / "runs" / "ddp_cpu"
    (run_dir,) = (root / "runs").iterdir()  # one run folder for both processes
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    record = read_run(run_dir)
    assert record["status"] == "completed" and record["config"]["resolved"]["world_size"] == 2


def test_inference_and_export_matches_pytorch_in_onnx_runtime(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnxruntime")
    out = _run("inference_and_export.py", tmp_path)
    root = tmp_path / "runs" / "inference_and_export"
    assert (root / "digits.onnx").stat().st_size > 0 and (root / "digits.pt").stat().st_size > 0
    assert _number(r"ONNX Runtime vs PyTorch: max abs difference of the logits ([\d.e+-]+)", out) < 1e-4
    assert _number(r"TorchScript vs PyTorch: max abs difference of the logits ([\d.e+-]+)", out) < 1e-4
    assert _number(r"predicted \d+ test images: accuracy ([\d.]+)", out) == _number(
        r"ONNX Runtime test accuracy: ([\d.]+)", out
    )
    assert "input size [3, 32, 32]" in out and "activation softmax" in out
    # `predict` on the files gives the accuracy of `trainer.predict` on the test split
    assert _number(r"predict\(\): \d+ new images, accuracy ([\d.]+)", out) == _number(
        r"predicted \d+ test images: accuracy ([\d.]+)", out
    )
    assert (root / "digits_predictions.csv").read_text().startswith("path,label,label_id,score,top_k")
    assert "detector: 4 unseen images" in out and (root / "shapes_boxes.csv").is_file()
    assert (root / "digits_model" / "model.safetensors").is_file() and (root / "shapes_model" / "config.json").is_file()
    # The error analysis of the best weights agrees with `predict`; the ONNX detector finds the same boxes.
    predicted = _number(r"predict\(\): \d+ new images, accuracy ([\d.]+)", out)
    assert _number(r"analysis: accuracy ([\d.]+)", out) == predicted
    assert (root / "digits_analysis" / "misclassified.csv").is_file()
    onnx_boxes = re.search(r"ONNX detector: export check True, (\d+) boxes scoring >= 0.3 \(PyTorch: (\d+)\)", out)
    assert onnx_boxes and onnx_boxes[1] == onnx_boxes[2]


def test_real_vs_fake_ends_with_the_run_summary(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("real_vs_fake.py", tmp_path)
    summary = out[out.index("training summary:") :].splitlines()
    assert summary[1].split()[:2] == ["epoch", "step"] and "val/accuracy" in summary[1]
    assert [line.split()[0] for line in summary[3:5]] == ["0", "1"]  # one row per epoch
    root = tmp_path / "runs" / "real_vs_fake"
    (run_dir,) = (root / "runs").iterdir()  # everything of the run in its folder
    assert os.listdir(root) == ["runs"] and (run_dir / "profiler" / "fit-simple.txt").is_file()
    assert (run_dir / "logs" / "csv" / "metrics.csv").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()
    record = read_run(run_dir)
    assert record["status"] == "completed" and record["config"]["model"]["hparams"]["multi_label"] is True
    assert record["test"]["metrics"]["test/accuracy"] >= 0
    state = torch.load(run_dir / "real_vs_fake.pth", weights_only=True)
    assert state["head.1.weight"].shape[0] == 1  # one logit


def test_config_driven_runs_keep_each_profilers_output_in_its_run_folder(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("config_driven_runs.py", tmp_path)
    assert "1. the resolved configuration" in out and "trainer:" in out.split("2. three runs")[0]
    runs = sorted((tmp_path / "runs" / "real_vs_fake_cli" / "runs").iterdir())
    assert len(runs) == 4  # three profiled runs and the repeat of the first
    assert (runs[0] / "profiler" / "fit-simple.txt").is_file() and (runs[1] / "profiler" / "fit-advanced.txt").is_file()
    assert any(p.name.endswith(".pt.trace.json") for p in (runs[2] / "profiler").iterdir())
    assert [read_run(run)["config"]["model"]["hparams"]["optimizer"] for run in runs] == [
        "adam",
        "sgd",
        "adamw",
        "adam",
    ]
    assert "status       completed" in out and "images_per_s" in out  # runs show: the summary


def test_gui_backend_runs_create_refuse_fail_and_retry(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("gui_backend_runs.py", tmp_path)
    assert re.search(r"runs/gui_backend/runs/\S+: status pending", out)
    assert "refused: Another exclusive run is active" in out and "the refused run stays pending" in out
    assert out.count("  [poll] epoch ") == 3  # each epoch of the live run, once
    assert "status failed, error RuntimeError: simulated failure" in out and "status completed, retry_of" in out
    statuses = sorted(read_run(run)["status"] for run in find_runs(tmp_path / "runs" / "gui_backend" / "runs"))
    assert statuses == ["completed", "completed", "failed", "pending"]


def test_medical_classifier_reports_sensitivity_specificity_auroc_auprc(tmp_path):
    out = _run("medical_classifier.py", tmp_path)
    for name in ("sensitivity", "specificity", "auroc", "auprc", "accuracy"):
        assert re.search(rf"^  {name} +[01]\.\d{{3}}$", out, flags=re.MULTILINE), name
    (csv_file,) = (tmp_path / "runs" / "medical_classifier").rglob("metrics.csv")
    header = csv_file.read_text().splitlines()[0].split(",")
    assert {"val/sensitivity", "val/specificity", "val/auroc", "val/auprc"} <= set(header)
    assert "best val/auroc" in out


def test_run_record_managed_fails_then_resumes_in_one_record(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("run_record_managed.py", tmp_path)
    assert "status failed" in out and "error: RuntimeError: simulated crash" in out
    (run_dir,) = (tmp_path / "runs" / "run_record_managed" / "runs").iterdir()
    record = read_run(run_dir)
    assert record["status"] == "completed" and record["error"] is None
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2, 3]
    assert [r["epoch"] for r in record["resumed_from"]] == [2]
    assert "[poll] epoch 2 starts: status running, 2 epochs recorded" in out


def test_clip_frozen_then_unfrozen_with_cosine_warmup_and_auroc(tmp_path):
    pytest.importorskip("sklearn")
    out = _run("clip_frozen_then_unfrozen.py", tmp_path)
    root = tmp_path / "runs" / "clip_frozen_then_unfrozen"
    phase1 = _hparams(next((root / "phase1_frozen").rglob("checkpoints/last.ckpt")))
    phase2 = _hparams(next((root / "phase2_unfrozen").rglob("checkpoints/last.ckpt")))
    assert phase1["backbone"]["model_name"] == "vit_xsmall_patch16_clip_224"
    assert phase1["scheduler"] == "cosine_warmup" and phase1["freeze_backbone"] is True
    assert phase2["freeze_backbone"] is False and phase2["lr"] < phase1["lr"]
    assert 0 <= _number(r"test AUROC ([\d.]+)", out) <= 1


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in _smoke_env().items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    assert "smoke mode: True" in text and "test accuracy:" in text and "val/accuracy" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)
    assert list((tmp_path / "runs" / "quickstart" / "runs").glob("*/checkpoints/best.ckpt"))
