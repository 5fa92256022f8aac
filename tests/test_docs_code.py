"""The ```python blocks of README.md and docs/ run, offline and on a CPU, on small real data.

Each page is one test: its blocks run top to bottom in one namespace, as a reader runs them,
inside `tmp_path` (so `"data/digits"`, `"runs/exp1"` and `"model.onnx"` are written there). A
page starts with what its text assumes exists (`_namespace`: every public autotimm name, a small
digits `data` module, a tiny `model`), after the substitutions of `SUBSTITUTIONS` (a 0.4 M-parameter
backbone with random weights instead of a download, small data, at most 2 epochs) and nothing else.
Blocks that cannot run here are listed in `SKIPPED` with the reason. New blocks run without any
change to this file; one that needs data or a file that does not exist gets a setup in `SETUP`.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import autotimm

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
TINY = 'BackboneConfig("test_resnet", pretrained=False)'  # 0.4 M parameters, no download


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # 1-based line of the block's first code line
    source: str


def blocks_of(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown page (fences may be indented, as in lists)."""
    found, fence, start, lines = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = re.match(r"(\s*)(`{3,}|~{3,})\s*(\S*)", line)
        if fence is None and match:
            fence, start, lines = (match.group(2), match.group(3).lower()), number + 1, []
        elif fence is not None and match and match.group(2) == fence[0] and not match.group(3):
            if fence[1] == "python":
                found.append(Block(str(path.relative_to(ROOT)), start, textwrap.dedent("\n".join(lines)) + "\n"))
            fence = None
        elif fence is not None:
            lines.append(line)
    return found


BLOCKS = {str(page.relative_to(ROOT)): blocks_of(page) for page in PAGES}

# (pattern, replacement, why): regular expressions applied to every block in this order.
SUBSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    (r'BackboneConfig\("resnet(18|50)"', 'BackboneConfig("test_resnet"', "a tiny timm model: seconds on a CPU"),
    (r'backbone="resnet50"', f"backbone={TINY}", "offline: no pretrained weights to download"),
    (r'ImageClassifier\("resnet50"', f"ImageClassifier({TINY}", "offline: no pretrained weights to download"),
    (r"max_epochs=(\d+)", r"max_epochs=min(\1, 2)", "CPU budget: at most 2 epochs"),
    (r'max_time="00:00:10:00"', 'max_time="00:00:00:20"', "CPU budget: a 20-second budget, not 10 minutes"),
    (r"num_train=\d+, num_val=\d+", "num_train=16, num_val=8", "16 + 8 synthetic detection images"),
    (
        r'make_digits_folder\("data/digits", image_size=32\)',
        'make_digits_folder("data/digits", image_size=32, max_per_class=10)',
        "CPU budget: 10 digits per class, not all 1,797",
    ),
    (r'"(path/to/images|my_images)"', "digits_dir", "a small digits folder instead of the reader's images"),
    (r'"path/to/coco"', "coco_dir", "a small synthetic COCO set instead of the reader's"),
    (r"image_size=224", "image_size=32", "CPU-sized images"),
    (r"image_size=640", "image_size=64", "CPU-sized images"),
    (r"num_classes=80", "num_classes=data.num_classes", "the synthetic COCO set has 3 categories"),
    (r'accelerator="gpu"', "accelerator=ACCELERATOR", '"cpu" without CUDA: GPU blocks are built, not launched'),
    (r'"path/to/last\.ckpt"', "str(resume_checkpoint)", "a checkpoint written by an earlier fit"),
    (r'"outputs/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"', "str(finished_run)", "a finished run"),
    (r'"runs/quickstart/runs/<run_name>"', "str(finished_run)", "a finished run"),
    (r'summarize\("outputs"\)', "summarize(finished_run.parent)", "a folder of finished runs"),
    (r"summarize\(trainer\.run_dir\)", "summarize(finished_run)", "a fitted trainer's run (the page's is not)"),
)

# (page, text in the block) -> why it does not run here.
SKIPPED: dict[tuple[str, str], str] = {
    ("docs/guide/data.md", 'dataset_name="CIFAR10"'): "downloads CIFAR-10",
}


def substitute(source: str) -> str:
    for pattern, replacement, _ in SUBSTITUTIONS:
        source = re.sub(pattern, replacement, source)
    return source


def _skip_reason(block: Block) -> str | None:
    return next((why for (page, text), why in SKIPPED.items() if page == block.page and text in block.source), None)


# --------------------------------------------------------------------------- what a page assumes


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn", reason="the digits demo needs scikit-learn")
    from autotimm.data import make_digits_folder

    return make_digits_folder(tmp_path_factory.mktemp("docs") / "digits", image_size=32, max_per_class=10)


def _data(digits_dir: Path) -> autotimm.ImageDataModule:
    return autotimm.ImageDataModule(digits_dir, image_size=32, batch_size=32, num_workers=0, augmentation_preset="none")


def _tiny_model(num_classes: int = 10) -> autotimm.ImageClassifier:
    return autotimm.ImageClassifier(autotimm.BackboneConfig("test_resnet", pretrained=False), num_classes=num_classes)


def _fit(root: str, digits_dir: Path) -> autotimm.AutoTrainer:
    trainer = autotimm.AutoTrainer(
        max_epochs=1, accelerator="cpu", default_root_dir=root, enable_progress_bar=False, plots=False
    )
    trainer.fit(_tiny_model(), datamodule=_data(digits_dir))
    return trainer


def _finished_run(ns: dict[str, Any], digits_dir: Path) -> None:
    ns["finished_run"] = _fit("outputs", digits_dir).run_dir


def _resume_checkpoint(ns: dict[str, Any], digits_dir: Path) -> None:
    ns["resume_checkpoint"] = Path(_fit("earlier", digits_dir).checkpoint_callback.last_model_path)


def _earlier_run_in_exp1(ns: dict[str, Any], digits_dir: Path) -> None:
    _fit("runs/exp1", digits_dir)  # what `ckpt_path="last"` resumes


def _local_weights(ns: dict[str, Any], digits_dir: Path) -> None:
    from safetensors.torch import save_file

    save_file(_tiny_model().backbone.state_dict(), "resnet50.safetensors")


def _two_photos(ns: dict[str, Any], digits_dir: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat.jpg", "dog.jpg"):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(name)


def _image_table(ns: dict[str, Any], digits_dir: Path) -> None:
    """`images/` and `metadata.csv`: 36 images of 3 classes (HAM10000-like `dx`), lesions of 2 images, a split
    column (24 train, 6 val, 6 test) and multi-label `tags`."""
    rng = np.random.default_rng(0)
    Path("images").mkdir()
    lines = ["image_path,dx,lesion_id,split,tags"]
    for i in range(36):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(f"images/img_{i:03d}.png")
        split = "train" if i < 24 else "val" if i < 30 else "test"
        lines.append(f"img_{i:03d}.png,{['nv', 'mel', 'bcc'][i % 3]},L{i // 2},{split},{['hair', 'ruler hair'][i % 2]}")
    Path("metadata.csv").write_text("\n".join(lines) + "\n")


# page -> what it needs beyond `_namespace`, made in its working folder before its first block.
SETUP: dict[str, list[Callable[[dict[str, Any], Path], None]]] = {
    "docs/getting-started.md": [_finished_run, _local_weights],
    "docs/guide/plots-summary.md": [_finished_run],
    "docs/guide/training.md": [_resume_checkpoint],
    "docs/guide/reliability.md": [_earlier_run_in_exp1],
    "docs/guide/export.md": [_two_photos],
    "docs/guide/data.md": [_image_table],
}


def _namespace(page: str, digits_dir: Path, tmp_path: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {"__name__": "__docs__", "autotimm": autotimm}
    ns.update({name: getattr(autotimm, name) for name in autotimm.__all__})
    ns.update(
        data=_data(digits_dir),
        model=_tiny_model(),
        digits_dir=str(digits_dir),
        ACCELERATOR="gpu" if torch.cuda.is_available() else "cpu",
    )
    if any("coco_dir" in substitute(b.source) for b in BLOCKS[page]):
        from autotimm.data import make_coco_shapes

        ns["coco_dir"] = str(make_coco_shapes(tmp_path / "coco", image_size=64, num_train=16, num_val=8))
    for setup in SETUP.get(page, []):
        setup(ns, digits_dir)
    return ns


@pytest.fixture
def _restored_logging() -> Iterator[None]:
    """Blocks may configure logging (`logging.basicConfig`, levels): put it back for the next tests."""
    handlers = logging.root.handlers[:]
    levels = {name: logging.getLogger(name).level for name in ("", *logging.root.manager.loggerDict)}
    yield
    logging.root.handlers[:] = handlers
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- tests

# Pages without a fit run in the quick loop; the others take tens of seconds to minutes here.
QUICK_PAGES = {
    "docs/guide/metrics-logging.md",
    "docs/guide/optimizers-schedulers.md",
    "docs/guide/performance.md",
    "docs/reference/index.md",
}


def _pages() -> list[Any]:
    marks = lambda page: () if page in QUICK_PAGES else (pytest.mark.slow,)  # noqa: E731
    return [pytest.param(page, id=page, marks=marks(page)) for page, blocks in BLOCKS.items() if blocks]


@pytest.mark.usefixtures("_restored_logging")
@pytest.mark.parametrize("page", _pages())
def test_page_blocks_run(page: str, digits_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    ns = _namespace(page, digits_dir, tmp_path)
    for block in BLOCKS[page]:
        if _skip_reason(block) is not None:
            continue
        code = compile(substitute(block.source), f"{page}:{block.line}", "exec")
        try:
            exec(code, ns)
        except Exception as error:
            raise AssertionError(f"the block at {page}:{block.line} fails: {type(error).__name__}: {error}") from error


def test_every_skip_and_substitution_still_matches_a_block() -> None:
    every = [block for blocks in BLOCKS.values() for block in blocks]
    for page, text in SKIPPED:
        assert any(b.page == page and text in b.source for b in every), f"no block of {page} holds {text!r}"
    for pattern, _, _ in SUBSTITUTIONS:
        assert any(re.search(pattern, b.source) for b in every), f"{pattern!r} matches no block: remove it"
    for page in SETUP:
        assert BLOCKS.get(page), f"{page} has no python block: remove its setup"


def test_install_instructions_name_no_pypi_package_of_this_name() -> None:
    # The `autotimm` on PyPI is another project (the original AutoTimm): installs come from a clone or a wheel.
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"pip install [\"']?autotimm\b", text):
            line = text.count("\n", 0, match.start()) + 1
            pytest.fail(f"{path.relative_to(ROOT)}:{line} tells to `{match.group(0)}...` (a different PyPI project)")


def test_tensorboard_is_a_core_dependency() -> None:
    # The API document's full example logs to TensorBoard: a plain install must have it.
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert any(re.match(r"tensorboard\b", requirement) for requirement in project["dependencies"])
    assert project["optional-dependencies"]["tensorboard"] == []  # kept so old install commands still work
