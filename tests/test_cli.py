"""The `autotimm` command line: the example configs train, configs are saved and repeat, `list`, errors."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import autotimm
from autotimm import BackboneConfig, ImageClassifier, list_optimizers, read_run
from autotimm.cli import AutoTimmCLI, main

# `main(args)` in-process while pytest's own arguments are in `sys.argv`: Lightning warns about the mix.
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"
CLASSIFY = CONFIGS / "classify_folder.yaml"
DETECT = CONFIGS / "detect_coco.yaml"
# Tiny and quick: overrides on top of the example configs.
FAST = [
    "--trainer.max_epochs", "1",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--trainer.plots", "false",
    "--model.init_args.backbone.model_name", "test_resnet",
    "--data.init_args.num_workers", "0",
]  # fmt: skip


def _run_dirs(root: Path) -> list[Path]:
    return sorted(path.parent for path in root.glob("runs/*/run.json"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes of real 32 px digits: 4 train, 1 val, 1 test image per class."""
    pytest.importorskip("sklearn", reason="the digits demo needs scikit-learn")
    from autotimm.data import make_digits_folder

    return make_digits_folder(tmp_path_factory.mktemp("cli") / "digits", image_size=32, max_per_class=6)


@pytest.fixture(scope="module")
def classify_run(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`autotimm fit` from classify_folder.yaml on the digits; returns the run folder."""
    root = tmp_path_factory.mktemp("classify")
    data = ["--data.init_args.data_dir", str(digits), "--data.init_args.image_size", "32"]
    main(["fit", "--config", str(CLASSIFY), "--trainer.default_root_dir", str(root), *data, *FAST])
    (run_dir,) = _run_dirs(root)
    return run_dir


def test_fit_from_example_config_saves_checkpoint_and_config(classify_run: Path, digits: Path):
    record = read_run(classify_run)
    assert record["status"] == "completed"
    best = Path(record["checkpoints"]["best"])
    assert best == classify_run / "checkpoints" / "best.ckpt" and best.is_file()
    assert record["metrics"]["best"]["monitor"] == "val/accuracy"  # the YAML's checkpoint_monitor
    assert Path(record["checkpoints"]["last"]).is_file()

    config = yaml.safe_load((classify_run / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 1  # the command line wins over the YAML's 10
    assert config["trainer"]["checkpoint_monitor"] == "val/accuracy"
    assert config["model"]["class_path"] == "autotimm.ImageClassifier"
    assert config["model"]["init_args"]["scheduler"] == "cosine"
    assert config["data"]["init_args"]["data_dir"] == str(digits)
    assert "seed_everything" not in config and config["trainer"]["seed"] == 0
    # The nested override reached the model that was trained, not only the config.
    model = ImageClassifier.load_from_checkpoint(best, map_location="cpu")
    assert model.hparams["backbone"]["model_name"] == "test_resnet"


def test_refit_from_saved_config_repeats_the_run(classify_run: Path):
    root = classify_run.parents[1]
    main(["fit", "--config", str(classify_run / "config.yaml")])

    first, second = classify_run, next(d for d in _run_dirs(root) if d != classify_run)
    assert yaml.safe_load((second / "config.yaml").read_text()) == yaml.safe_load((first / "config.yaml").read_text())
    # Same config and `trainer.seed`: the same initial weights, batches and augmentation.
    final = [read_run(d)["metrics"]["final"] for d in (first, second)]
    assert final[1]["val/loss"] == pytest.approx(final[0]["val/loss"], rel=1e-4)
    assert read_run(second)["status"] == "completed"


def test_validate_test_predict_with_ckpt_path(classify_run: Path):
    config = str(classify_run / "config.yaml")
    record = read_run(classify_run)
    best = record["checkpoints"]["best"]

    cli = AutoTimmCLI(["validate", "--config", config, "--ckpt_path", best])
    # The checkpoint's weights are evaluated: its score is the one the checkpoint was kept for.
    assert cli.trainer.callback_metrics["val/accuracy"].item() == pytest.approx(record["metrics"]["best"]["value"])

    cli = AutoTimmCLI(["test", "--config", config, "--ckpt_path", best])
    assert 0.0 <= cli.trainer.callback_metrics["test/accuracy"].item() <= 1.0

    cli = AutoTimmCLI(["predict", "--config", config, "--ckpt_path", record["checkpoints"]["last"]])
    probabilities = torch.cat(cli.trainer.predict_loop.predictions)
    assert probabilities.shape == (10, 10)  # one test image per class, 10 classes
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(10))


def test_fit_detection_example_on_a_coco_folder(tmp_path: Path):
    from autotimm.data import make_coco_shapes

    coco = make_coco_shapes(tmp_path / "coco", image_size=64, num_train=4, num_val=2)
    data = ["--data.init_args.data_dir", str(coco), "--data.init_args.image_size", "64"]
    # The size is given once, to the data module; the model takes it, and the 3 categories, from there.
    main(["fit", "--config", str(DETECT), "--trainer.default_root_dir", str(tmp_path / "out"), *data, *FAST,
          "--model.init_args.fpn_channels", "64"])  # fmt: skip

    (run_dir,) = _run_dirs(tmp_path / "out")
    record = read_run(run_dir)
    assert record["status"] == "completed" and Path(record["checkpoints"]["last"]).is_file()
    assert record["metrics"]["best"]["monitor"] == "val/map" and Path(record["checkpoints"]["best"]).is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "autotimm.ObjectDetector"
    assert config["data"]["init_args"]["image_size"] == 64
    assert not {"image_size", "num_classes"} & set(config["model"]["init_args"])  # linked, not repeated
    hparams = torch.load(record["checkpoints"]["last"], weights_only=True)["hyper_parameters"]
    assert hparams["image_size"] == 64 and hparams["num_classes"] == 3


@pytest.fixture(scope="module")
def three_digits(digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits 0, 1 and 2 only: a 3-class folder."""
    root = tmp_path_factory.mktemp("three") / "digits"
    for split in ("train", "val", "test"):
        for digit in ("0", "1", "2"):
            shutil.copytree(digits / split / digit, root / split / digit)
    return root


def test_fit_takes_num_classes_from_the_data(three_digits: Path, tmp_path: Path):
    data = ["--data.init_args.data_dir", str(three_digits), "--data.init_args.image_size", "32"]
    main(["fit", "--config", str(CLASSIFY), "--trainer.default_root_dir", str(tmp_path), *data, *FAST])

    (run_dir,) = _run_dirs(tmp_path)
    record = read_run(run_dir)
    assert record["status"] == "completed"
    model = ImageClassifier.load_from_checkpoint(record["checkpoints"]["last"], map_location="cpu")
    assert model.hparams["num_classes"] == 3 and model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert "num_classes" not in yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]


def test_a_num_classes_or_image_size_that_the_data_contradicts_is_named_as_a_flag(three_digits: Path, tmp_path: Path):
    data = ["--data.init_args.data_dir", str(three_digits), "--data.init_args.image_size", "32"]
    with pytest.raises(ValueError, match=r"`--model\.init_args\.num_classes 10`.* has num_classes=3\. Leave "):
        AutoTimmCLI(["--config", str(CLASSIFY), *data, *FAST, "--model.init_args.num_classes", "10"], run=False)
    # The same value as the data's is accepted.
    cli = AutoTimmCLI(["--config", str(CLASSIFY), *data, *FAST, "--model.init_args.num_classes", "3"], run=False)
    assert cli.model.num_classes == 3

    from autotimm.data import make_coco_shapes

    coco = make_coco_shapes(tmp_path / "coco", image_size=64, num_train=2, num_val=0)
    args = ["--config", str(DETECT), "--data.init_args.data_dir", str(coco), "--data.init_args.image_size", "64", *FAST]
    with pytest.raises(ValueError, match=r"image_size 320`.*image_size=64 \(`--data\.init_args\.image_size`\)"):
        AutoTimmCLI([*args, "--model.init_args.image_size", "320"], run=False)


def test_batch_limits_keep_ints_and_floats(digits: Path, tmp_path: Path):
    cli = AutoTimmCLI(["--config", str(CLASSIFY), "--data.init_args.data_dir", str(digits), *FAST,
                       "--data.init_args.image_size", "32", "--data.init_args.batch_size", "4",
                       "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0.5",
                       "--trainer.val_check_interval", "1"], run=False)  # fmt: skip
    trainer = cli.trainer
    assert trainer.limit_train_batches == 2 and isinstance(trainer.limit_train_batches, int)
    assert trainer.limit_val_batches == 0.5 and trainer.val_check_interval == 1
    trainer.fit(cli.model, datamodule=cli.datamodule)
    # 2 training batches (not 2.0, refused as a fraction above 1); half of the 3 validation batches.
    assert trainer.global_step == 2 and trainer.num_val_batches == [1]


def test_print_config_applies_overrides(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CLASSIFY), "--trainer.max_epochs", "3", "--model.init_args.lr", "0.01",
              "--print_config"])  # fmt: skip
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["trainer"]["max_epochs"] == 3
    assert config["model"]["init_args"]["lr"] == 0.01
    assert config["trainer"]["logger"] == [{"backend": "csv", "params": {}}]


@pytest.mark.parametrize(
    ("registry", "pattern", "expected"),
    [
        ("optimizers", None, {"adamw", "sgd", "lamb"}),
        ("optimizers", "ADAM*", {"adam", "adamw"}),
        ("schedulers", "cosine*", {"cosine_warmup", "cosineannealinglr"}),
        ("backbones", "convnext_t*", {"convnext_tiny"}),
    ],
)
def test_list_prints_names_filtered_by_pattern(capsys, registry, pattern, expected):
    main(["list", registry] + ([pattern] if pattern else []))
    names = capsys.readouterr().out.splitlines()
    assert expected <= set(names)
    if pattern is None:
        assert names == sorted(n for group in list_optimizers().values() for n in group)
    else:
        assert all(name.startswith(pattern.lower().rstrip("*")) for name in names)


def test_list_errors_name_the_bad_registry_and_pattern(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["list", "optimisers"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'optimisers'" in error and all(name in error for name in ("backbones", "optimizers", "schedulers"))

    with pytest.raises(SystemExit, match="no schedulers match 'nothing\\*'"):
        main(["list", "schedulers", "nothing*"])


def test_misspelt_class_argument_or_value_is_named(capsys, digits: Path, tmp_path: Path):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(CLASSIFY), "--model.class_path", "ImageClasifier"])
    assert "ImageClasifier" in capsys.readouterr().err

    typo = tmp_path / "typo.yaml"
    typo.write_text(CLASSIFY.read_text().replace("    lr: 0.001", "    lrr: 0.001"))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(typo)])
    assert "'lrr' is not accepted" in capsys.readouterr().err

    # A bad value fails with the model's own error, not jsonargparse's wrapper.
    with pytest.raises(ValueError, match="`lr`.* but got -1"):
        main(["fit", "--config", str(CLASSIFY), "--data.init_args.data_dir", str(digits), *FAST,
              "--model.init_args.lr", "-1"])  # fmt: skip


def test_help_version_and_python_m(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(command in help_text for command in ("fit", "validate", "test", "predict", "list"))

    monkeypatch.setattr(sys, "argv", ["autotimm", "--version"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(Path(autotimm.__file__).with_name("__main__.py")), run_name="__main__")
    assert capsys.readouterr().out.strip() == f"autotimm {autotimm.__version__}"


def test_installed_console_script_runs():
    script = shutil.which("autotimm")
    assert script is not None, 'the `autotimm` console script is not installed: pip install -e "."'
    result = subprocess.run([script, "list", "optimizers", "adam*"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "adamw" in result.stdout.splitlines()


# ---- `autotimm predict CHECKPOINT SOURCE` on new images ----
@pytest.mark.slow
def test_predict_a_folder_of_new_images_from_a_run_folder(
    classify_run: Path,
    digits: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    monkeypatch.chdir(tmp_path)
    new_images = digits / "test"
    main(
        [
            "predict",
            str(classify_run),
            str(new_images),
            "--out",
            "results.csv",
            "--save-images",
            "drawn",
            "--top-k",
            "3",
        ]
    )
    expected = autotimm.load(classify_run, device="cpu").predict(new_images, top_k=3)
    rows = (tmp_path / "results.csv").read_text().splitlines()
    assert rows[1:] == [",".join(str(v) for v in row.values()) for row in expected.rows()]
    assert len(list((tmp_path / "drawn").iterdir())) == len(expected) == 10
    assert "10 images, results in results.csv" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drawn", "results.csv"]  # no lightning_logs/

    main(["predict", str(classify_run), str(new_images / "0"), "--out", "results.json"])
    assert len(json.loads((tmp_path / "results.json").read_text())["predictions"]) == 1
    capsys.readouterr()
    main(["predict", str(classify_run), str(new_images / "0")])  # no --out: one line per image
    assert capsys.readouterr().out.startswith(str(new_images / "0"))


def test_predict_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit, match="autotimm predict: .*missing.ckpt"):
        main(["predict", str(tmp_path / "missing.ckpt"), str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--out must name a .csv or .json file, not 'out.txt'"):
        main(["predict", str(tmp_path / "missing.ckpt"), str(tmp_path), "--out", "out.txt"])
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "model.ckpt"), "--help"])
    assert "--save-images" in capsys.readouterr().out


# ---- `autotimm explain CHECKPOINT SOURCE --out DIR` ----
@pytest.mark.slow
def test_explain_writes_overlays_and_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    model = ImageClassifier(BackboneConfig("test_resnet", pretrained=False), num_classes=3)
    model.class_names = ["cat", "dog", "fox"]
    model.trained_data_config = {**model.data_config, "input_size": (3, 64, 64)}
    folder = model.save_pretrained(tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(80, 60), (64, 96)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
            images / f"{i}.png"
        )
    main(["explain", str(folder), str(images), "--out", str(tmp_path / "maps"), "--target", "dog"])
    assert "2 images, overlays and explanations.csv in" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["0.png", "1.png", "explanations.csv"]
    assert Image.open(tmp_path / "maps" / "1.png").size == (64, 96)
    rows = (tmp_path / "maps" / "explanations.csv").read_text().splitlines()
    assert rows[0] == "path,label,label_id,score,method" and all(",dog,1," in row for row in rows[1:])
    with pytest.raises(SystemExit, match=r"autotimm explain: .*`target`.*\['cat', 'dog', 'fox'\].*'dgo'"):
        main(["explain", str(folder), str(images), "--out", str(tmp_path / "maps"), "--target", "dgo"])
    with pytest.raises(SystemExit, match="autotimm explain: .*missing.ckpt"):
        main(["explain", str(tmp_path / "missing.ckpt"), str(images), "--out", str(tmp_path / "maps")])
