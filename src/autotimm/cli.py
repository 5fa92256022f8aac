"""The `autotimm` command line: `fit`, `validate`, `test`, `predict` from a YAML config, `list`,
`predict CHECKPOINT SOURCE` on new images, and `explain CHECKPOINT SOURCE --out DIR` (class-activation maps).

`fit`/`validate`/`test`/`predict` are Lightning's `LightningCLI` (jsonargparse) with
`AutoTrainer` as the trainer, any `LightningModule` as `model` and any `LightningDataModule`
as `data` (`class_path: ImageClassifier`, `class_path: my_package.MyDataModule`, ...).
Every argument is settable in the YAML file and on the command line
(`--trainer.max_epochs 3`, `--model.init_args.lr 0.01`); the command line wins.

Examples:
    ```bash
    autotimm fit --config examples/configs/classify_folder.yaml --data.init_args.data_dir path/to/images
    autotimm fit --config runs/<run_name>/config.yaml    # repeat a run (in a new run folder)
    autotimm test --config run.yaml --ckpt_path path/to/best.ckpt
    autotimm list backbones "convnext*"
    autotimm predict runs/<run_name> new_images/ --out results.csv --save-images drawn/
    autotimm export runs/<run_name> --format onnx --out model.onnx   # checked; prints the check's figures
    autotimm predict model.onnx new_images/ --out results.csv       # ONNX Runtime, no PyTorch model
    autotimm explain runs/<run_name> new_images/ --out maps/ --target cat
    autotimm runs list runs                                  # one row per run, at any depth
    autotimm runs show 2026-12-05_14-03-22                  # one run: status, best, checkpoints, epochs
    ```
"""

from __future__ import annotations

import fnmatch
import inspect
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser, Namespace
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from autotimm._compat import LightningCLIPrivateSteps, instantiation_error
from autotimm._version import __version__
from autotimm.backbones import list_backbones
from autotimm.export import METADATA_FILE, DetectionCheck, ExportCheckError
from autotimm.inference import NotAnImageError, OnnxPredictor
from autotimm.optim import list_optimizers, list_schedulers
from autotimm.runs.commands import runs_command
from autotimm.tasks import ImageClassifier, ObjectDetector, load
from autotimm.trainer import AutoTrainer

__all__ = ["AutoTimmCLI", "main"]

_CONFIG_FILENAME = "config.yaml"
# What names one run: a repeat of it from its saved config gets a new one.
_NOT_REPEATED = ("run_name", "run_dir", "retry_of")

_DESCRIPTION = (
    "Train and evaluate timm backbones from a YAML config: `autotimm fit --config run.yaml`. "
    "`autotimm list {backbones,optimizers,schedulers} [PATTERN]` prints the registries; "
    "`autotimm runs {list [DIR],show RUN}` the runs on disk; "
    "`autotimm predict CHECKPOINT SOURCE [--out results.csv]` predicts on new images (see `autotimm predict "
    "CHECKPOINT --help`); `autotimm export CHECKPOINT --format onnx|torchscript` exports a model; "
    "`autotimm explain CHECKPOINT SOURCE --out DIR` draws class-activation maps."
)
_USAGE = (
    "autotimm {} [-h] [-c CONFIG] [--print_config] [--trainer.ARG VALUE] [--model.init_args.ARG VALUE] "
    "[--data.init_args.ARG VALUE] [--ckpt_path CKPT_PATH]"
)
_REGISTRIES: dict[str, Callable[[str | None, bool], list[str]]] = {
    "backbones": lambda pattern, pretrained: list_backbones(pattern, pretrained=pretrained),
    "optimizers": lambda pattern, pretrained: _matching(list_optimizers(), pattern),
    "schedulers": lambda pattern, pretrained: _matching(list_schedulers(), pattern),
}
# `skip_unset` replaced `skip_none` in jsonargparse 4.49; either way, keep the keys whose value is None.
_KEEP_NONE = (
    {"skip_unset": False} if "skip_unset" in inspect.signature(ArgumentParser.save).parameters else {"skip_none": False}
)
# What the data module knows and the model takes: `data.<name>` is linked to `model.init_args.<name>`.
_FROM_DATA = ("num_classes", "image_size")
_TRAINER_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(pl.Trainer.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}


class _SaveRunConfig(Callback):
    """Write the resolved command-line config to the run folder, `<run_dir>/config.yaml`, when `fit` starts.

    `trainer.run_dir` is `<runs_dir>/<run_name>`, the run's folder; a new run gets a new
    folder, and a resumed run rewrites its file. `autotimm fit --config <run_dir>/config.yaml`
    repeats the run in a new folder (the file leaves out `run_name`, `run_dir` and `retry_of`).
    Under `fast_dev_run` (no run folder) nothing is written.

    Args:
        parser: The parser of the subcommand (it writes the file, with every default filled in).
        config: The parsed config of the subcommand.

    Examples:
        >>> trainer.callbacks.append(_SaveRunConfig(parser, config))  # doctest: +SKIP
    """

    def __init__(self, parser: ArgumentParser, config: Namespace) -> None:
        self.parser = parser
        self.config = config

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after `RunRecord.on_fit_start` (this callback is added after the trainer is built), which
        # creates `run_dir`.
        run_dir = getattr(trainer, "run_dir", None)
        if not trainer.is_global_zero:
            return
        if run_dir is None:
            rank_zero_info("autotimm: no run folder (`fast_dev_run`); the config is not saved.")
            return
        path = run_dir / _CONFIG_FILENAME
        config = self.config.clone()
        for key in _NOT_REPEATED:
            if f"trainer.{key}" in config:
                config[f"trainer.{key}"] = None
        self.parser.save(config, path, overwrite=True, multifile=False, **_KEEP_NONE)
        rank_zero_info(f"autotimm: config saved to {path}; repeat the run with `autotimm fit --config {path}`.")


class _Parser(LightningArgumentParser):
    """Lightning's parser that keeps the subcommands action it adds (`add_subcommands` returns it).

    `autotimm` adds `list` to it, and finds the parser of the subcommand that runs in it.
    """

    subcommands_action: Any = None

    def add_subcommands(self, *args: Any, **kwargs: Any) -> Any:
        self.subcommands_action = super().add_subcommands(*args, **kwargs)
        return self.subcommands_action


class AutoTimmCLI(LightningCLIPrivateSteps, LightningCLI):
    """Lightning's `LightningCLI` set up for autotimm: `AutoTrainer`, any model, any data module.

    Differences from a plain `LightningCLI`:

    - the trainer is `AutoTrainer`, so `trainer.checkpoint_monitor`, `trainer.logger`
      (a list of `{backend: csv}` entries), `trainer.tuner_config`, `trainer.seed`, ... are
      config keys; Lightning `Trainer` arguments left at their defaults are not passed on;
    - `model` and `data` are in subclass mode (`class_path:` plus `init_args:`) and `data`
      is required; the model configures its own optimizer and scheduler
      (`model.init_args.optimizer`, `model.init_args.scheduler`);
    - the model takes `num_classes` and `image_size` from the data module (for models that
      have these arguments): a config needs neither, and one that gives a different value
      from the data's fails before training, naming both;
    - there is no `seed_everything` key: `trainer.seed` seeds before the model is built
      (so initial weights repeat) and again at the start of `fit` (AutoTrainer's own seeding);
    - `fit` saves the resolved config to the run folder, `<runs_dir>/<run_name>/config.yaml`,
      instead of the logger's folder, so runs in the same `default_root_dir` never collide;
    - with `ckpt_path`, the model is built from the config and the checkpoint's weights are
      loaded into it (Lightning's merging of checkpoint hyperparameters into `model` is off).

    Args:
        args: Command-line arguments (without the program name); `None` reads `sys.argv`.
        run: Run the subcommand (`fit`, ...); with `False` there are no subcommands and the
            trainer, model and data are only built (`cli.trainer`, `cli.model`, `cli.datamodule`).

    Examples:
        >>> cli = AutoTimmCLI(["--config", "run.yaml", "--trainer.max_epochs", "1"], run=False)  # doctest: +SKIP
        >>> cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # doctest: +SKIP
    """

    def __init__(self, args: Sequence[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=AutoTrainer,
            save_config_callback=None,
            auto_configure_optimizers=False,
            parser_class=_Parser,
            parser_kwargs={
                "prog": "autotimm",
                "description": _DESCRIPTION,
                "version": __version__,
                **{name: {"usage": _USAGE.format(name)} for name in self.subcommands()},
            },
            args=None if args is None else list(args),
            run=run,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("dump_header", [f"autotimm=={__version__}", f"pytorch_lightning=={pl.__version__}"])
        return super().init_parser(**kwargs)

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if add_subcommands:  # shown by `autotimm --help`; `main` runs it without the Lightning machinery
            list_parser = _list_parser()
            self.parser.subcommands_action.add_subcommand("list", list_parser, help=list_parser.description)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """No `seed_everything` argument: `trainer.seed` is the one seed."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link what the data module knows (`num_classes`, `image_size`) into the model's arguments.

        The links apply when the classes are built; a data module or model without the
        attribute or argument is left as it is.
        """
        for name in _FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def parse_ckpt_path(self) -> None:
        """Keep the model config as given: `ckpt_path` only loads the weights into the model it describes.

        (Lightning would merge the checkpoint's hyperparameters into `model`, which works only for
        models that save their `__init__` arguments unchanged; autotimm's tasks save a normalised copy.)
        """

    def set_seed(self) -> None:
        """Seed from `trainer.seed` before the model is built (in place of `seed_everything`)."""
        seed = self._section(self.config, "trainer").get("seed")
        if seed is not None:
            seed_everything(seed, workers=True, verbose=False)

    def _section(self, config: Namespace, key: str) -> Any:
        """`config[key]`, inside the subcommand's part of `config` when there is a subcommand."""
        return config.get(str(self.subcommand), config).get(key)

    def instantiate_classes(self) -> None:
        """Build data, model and trainer; a bad value fails with the class's own error.

        Raises:
            ValueError: If the config gives the model a `num_classes` or `image_size` other than
                the data module's (the message names both, as command-line flags).
        """
        model_args = self._section(self.config, "model").get("init_args") or {}
        given = {name: model_args.get(name) for name in _FROM_DATA}  # before the links overwrite them
        try:
            super().instantiate_classes()
        except ValueError as error:
            # jsonargparse wraps an error of the model's or data module's `__init__` in a long
            # "Does not validate against any of the Union subtypes ..."; raise the error itself.
            cause = instantiation_error(error)
            if cause is not error:
                raise cause from None
            raise
        data_args = self._section(self.config, "data").get("init_args") or {}
        for name, value in given.items():
            data_value = getattr(self.datamodule, name, None)
            if value is None or data_value is None or value == data_value:
                continue
            where = f" (`--data.init_args.{name}`)" if name in data_args else ""
            raise ValueError(
                f"`--model.init_args.{name} {value}` (or `{name}: {value}` under `model: init_args:` in the config) "
                f"does not match the data module: {type(self.datamodule).__name__} has {name}={data_value!r}{where}. "
                f"Leave `--model.init_args.{name}` out: the model takes it from the data module."
            )

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Build the `AutoTrainer` from the changed arguments only, and have `fit` save the config."""
        trainer_config = self._section(self.config_init, "trainer")
        own = inspect.signature(self.trainer_class).parameters
        for key in [k for k in trainer_config.keys() if k not in own and k in _TRAINER_DEFAULTS]:
            default = _TRAINER_DEFAULTS[key]
            if type(trainer_config[key]) is type(default) and trainer_config[key] == default:
                del trainer_config[key]  # Lightning's own default: passed on only if changed
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand is None:
            parser, config = self.parser, self.config
        else:
            parser, config = self.parser.subcommands_action.choices[self.subcommand], self.config[self.subcommand]
        trainer.callbacks.append(_SaveRunConfig(parser, config))
        return trainer


def _matching(groups: dict[str, list[str]], pattern: str | None) -> list[str]:
    names = sorted({name for names in groups.values() for name in names})
    return names if pattern is None else [n for n in names if fnmatch.fnmatchcase(n, pattern.lower())]


def _list_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="autotimm list",
        description="Print the names in a registry, one a line, optionally filtered by a shell-style pattern.",
    )
    parser.add_argument("registry", choices=sorted(_REGISTRIES), help="The registry to print.")
    parser.add_argument(
        "pattern", nargs="?", default=None, help='A shell-style pattern such as "convnext*" (quote it in the shell).'
    )
    parser.add_argument(
        "--pretrained", action="store_true", help="backbones only: names with pretrained weights (with their tags)."
    )
    return parser


def _run_list(args: Sequence[str]) -> None:
    parser = _list_parser()
    config = parser.parse_args(list(args))
    if config.pretrained and config.registry != "backbones":
        parser.error(f"--pretrained applies to backbones only, not to {config.registry}.")
    names = _REGISTRIES[config.registry](config.pattern, config.pretrained)
    if not names:
        sys.exit(f"autotimm list: no {config.registry} match {config.pattern!r}.")
    print("\n".join(names))


def _model_parser(prog: str, description: str, batch_size: int) -> ArgumentParser:
    """A parser of `CHECKPOINT SOURCE...` and the options `predict` and `explain` share."""
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "checkpoint",
        help="A .ckpt file, a run folder (its best checkpoint), a save_pretrained folder or an exported .onnx file.",
    )
    parser.add_argument("source", nargs="+", help="Image files, folders (searched recursively) or glob patterns.")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="Images per forward pass.")
    parser.add_argument("--on-bad-file", choices=["skip", "raise"], default="skip", help="Files that are not images.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps; the best one there is by default.")
    return parser


def _predict_parser() -> ArgumentParser:
    parser = _model_parser(
        "autotimm predict",
        "Predict on new images with a trained model: one line per image, or a CSV / JSON file with --out. "
        "(`autotimm predict --config run.yaml --ckpt_path ...` predicts a data module's test split instead.)",
        batch_size=16,
    )
    parser.add_argument("--out", default=None, help="Write the results to this .csv or .json file.")
    parser.add_argument("--save-images", default=None, help="Draw each prediction onto its image, into this folder.")
    parser.add_argument("--tta", action="store_true", help="Test-time augmentation with the mirror image.")
    parser.add_argument("--top-k", type=int, default=5, help="Classifiers: how many classes each result lists.")
    parser.add_argument(
        "--score-thresh", type=float, default=None, help="Detectors: leave out boxes scoring below this."
    )
    parser.add_argument("--class-agnostic-nms", action="store_true", help="Detectors: one box per object.")
    return parser


def _run_predict(args: Sequence[str]) -> None:
    """`autotimm predict CHECKPOINT SOURCE...`: `autotimm.load` then `predict`, with a progress bar; no trainer."""
    config = _predict_parser().parse_args(list(args))
    if config.out is not None and not config.out.lower().endswith((".csv", ".json")):
        sys.exit(f"autotimm predict: --out must name a .csv or .json file, not {config.out!r}.")
    try:
        model = load(config.checkpoint, device=config.device)
        options: dict[str, Any] = {
            "batch_size": config.batch_size,
            "tta": config.tta,
            "on_bad_file": config.on_bad_file,
        }
        if isinstance(model, OnnxPredictor):
            if config.tta:
                sys.exit("autotimm predict: --tta needs the PyTorch model (a checkpoint), not an ONNX file.")
            del options["tta"]
        if isinstance(model, ImageClassifier) or getattr(model, "task", None) == "classification":
            options["top_k"] = config.top_k
        else:
            options.update(score_thresh=config.score_thresh, class_agnostic_nms=config.class_agnostic_nms)
        results = model.predict(config.source, progress=True, **options)
    except (FileNotFoundError, NotAnImageError, ValueError) as error:
        sys.exit(f"autotimm predict: {error}")
    if config.out is None:
        for row in results.rows():
            print(",".join(str(value) for value in row.values()))
    else:
        written = results.to_json(config.out) if config.out.lower().endswith(".json") else results.to_csv(config.out)
        print(f"autotimm predict: {len(results)} images, results in {written}")
    if config.save_images is not None:
        results.save_images(config.save_images)
        print(f"autotimm predict: drawings in {config.save_images}")
    if results.skipped:
        print(f"autotimm predict: skipped {len(results.skipped)} files that are not readable images", file=sys.stderr)


def _export_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="autotimm export",
        description=(
            "Export a trained classifier or detector to ONNX or TorchScript, checked against the PyTorch model "
            "(detectors: box decoding and NMS inside the file). Prints the check's figures."
        ),
    )
    parser.add_argument(
        "checkpoint", help="A .ckpt file, a run folder (its best checkpoint) or a save_pretrained folder."
    )
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="The file format.")
    parser.add_argument("--out", default=None, help="The file to write; model.onnx / model.pt beside the checkpoint.")
    parser.add_argument(
        "--check-images", default=None, help="Detectors: new images (a folder or glob) to check the export on."
    )
    return parser


def _explain_parser() -> ArgumentParser:
    parser = _model_parser(
        "autotimm explain",
        "Class-activation maps (Grad-CAM) of a trained classifier: each image with the map laid over it, into "
        "--out, and explanations.csv there (the class explained and its score). Needs captum, the `explain` extra.",
        batch_size=8,
    )
    parser.add_argument("--out", required=True, help="The folder to write the overlays and explanations.csv into.")
    parser.add_argument(
        "--target", default=None, help="The class to explain (a name); each image's prediction by default."
    )
    parser.add_argument(
        "--layer", default=None, help="The backbone layer (a module name); the last stage or block by default."
    )
    return parser


def _run_export(args: Sequence[str]) -> None:
    """`autotimm export CHECKPOINT --format onnx|torchscript --out PATH`: export, check, print the figures."""
    config = _export_parser().parse_args(list(args))
    suffix = ".onnx" if config.format == "onnx" else ".pt"
    try:
        model = load(config.checkpoint, device="cpu")
        if isinstance(model, OnnxPredictor):
            sys.exit(f"autotimm export: {config.checkpoint!r} is already an ONNX file; export from a checkpoint.")
        base = Path(config.checkpoint)
        out = Path(config.out) if config.out else (base if base.is_dir() else base.parent) / f"model{suffix}"
        detector = isinstance(model, ObjectDetector)
        options = {"check_images": config.check_images} if detector else {}
        if config.format == "onnx":
            path = model.to_onnx(out, **options)
        else:
            path = out
            model.to_torchscript(out, **options)
    except (FileNotFoundError, NotAnImageError, ValueError, ExportCheckError) as error:
        sys.exit(f"autotimm export: {error}")
    print(f"autotimm export: {type(model).__name__} written to {path}")
    if detector:
        print(f"autotimm export: {_check_line(path, config.format)}")
    else:
        print("autotimm export: check passed: the file's logits match the PyTorch model's on a random batch")


def _check_line(path: Path, file_format: str) -> str:
    """The export check's figures, as the exporter stored them in the file's metadata."""
    if file_format == "onnx":
        figures = OnnxPredictor(path).export_check or {}
    else:
        extra = {METADATA_FILE: ""}
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        figures = json.loads(extra[METADATA_FILE]).get("export_check") or {}
    fields = {k: figures[k] for k in DetectionCheck.__dataclass_fields__ if k in figures}
    return str(DetectionCheck(**fields)) if len(fields) == len(DetectionCheck.__dataclass_fields__) else "no check"


def _run_explain(args: Sequence[str]) -> None:
    """`autotimm explain CHECKPOINT SOURCE... --out DIR`: `autotimm.load` then `explain`; no trainer."""
    config = _explain_parser().parse_args(list(args))
    try:
        model = load(config.checkpoint, device=config.device)
        if not isinstance(model, ImageClassifier):
            raise ValueError(f"{config.checkpoint!r} holds a {type(model).__name__}; explain works on classifiers.")
        results = model.explain(
            config.source,
            target=config.target,
            layer=config.layer,
            batch_size=config.batch_size,
            on_bad_file=config.on_bad_file,
            progress=True,
        )
    except (FileNotFoundError, ImportError, NotAnImageError, ValueError) as error:
        sys.exit(f"autotimm explain: {error}")
    results.save_images(config.out)
    written = results.to_csv(Path(config.out) / "explanations.csv")
    print(f"autotimm explain: {len(results)} images, overlays and {written.name} in {config.out}")
    if results.skipped:
        print(f"autotimm explain: skipped {len(results.skipped)} files that are not readable images", file=sys.stderr)


def main(args: Sequence[str] | None = None) -> None:
    """Run the `autotimm` command line (the console script and `python -m autotimm`).

    Args:
        args: Arguments without the program name, e.g. `["fit", "--config", "run.yaml"]`;
            `None` reads `sys.argv`.

    Examples:
        >>> main(["list", "optimizers", "adam*"])  # doctest: +SKIP
        adam
        adamax
        adamw
        ...
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["list"]:
        _run_list(argv[1:])
        return
    if argv[:1] == ["predict"] and len(argv) > 1 and not argv[1].startswith("-"):
        _run_predict(argv[1:])  # new images; `predict --config ...` is LightningCLI's
        return
    if argv[:1] == ["export"]:
        _run_export(argv[1:])
        return
    if argv[:1] == ["explain"]:
        _run_explain(argv[1:])
        return
    if argv[:1] == ["runs"]:
        runs_command(argv[1:])
        return
    AutoTimmCLI(args)
