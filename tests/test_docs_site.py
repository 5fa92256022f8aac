"""The documentation site builds with `mkdocs build --strict`, and every page renders in a real browser.

The browser is headless Chromium (Debian's `chromium` package, which `.ci/run` installs). Each page's
DOM is read after its scripts ran: the page has its heading, as many code blocks as its Markdown
source, and the theme's scripts ran (they mark the `<html>` element).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _require(ok: bool, what: str) -> None:
    # CI installs everything the check needs: there a missing piece is a failure, not a skip.
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing in CI")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require(_has_mkdocs(), "mkdocs and mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def _has_mkdocs() -> bool:
    return importlib.util.find_spec("mkdocs") is not None and importlib.util.find_spec("mkdocstrings") is not None


def _pages() -> list[Path]:
    return sorted(p.relative_to(DOCS) for p in DOCS.rglob("*.md"))


def _built_page(site: Path, source: Path) -> Path:
    """Where mkdocs (with directory URLs) writes the page of `docs/<source>`."""
    stem = source.with_suffix("")
    return site / (stem.parent if stem.name == "index" else stem) / "index.html"


def _code_blocks(markdown: str) -> int:
    """Fenced code blocks in a Markdown page (openings only), not counting those inside other fences."""
    count, fence = 0, None
    for line in markdown.splitlines():
        match = re.match(r"\s*(`{3,}|~{3,})", line)
        if not match:
            continue
        if fence is None:
            fence, count = match.group(1), count + 1
        elif match.group(1).startswith(fence[0]) and len(match.group(1)) >= len(fence):
            fence = None
    return count


def _dom(page: Path) -> str:
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_every_page_renders_in_a_browser_with_its_heading_and_code_blocks(site: Path) -> None:
    _require(CHROMIUM is not None, "chromium")
    sources = _pages()
    assert len(sources) >= 15, sources
    with ThreadPoolExecutor(max_workers=4) as pool:
        doms = dict(zip(sources, pool.map(lambda s: _dom(_built_page(site, s)), sources), strict=True))
    for source, dom in doms.items():
        markdown = (DOCS / source).read_text()
        assert re.search(r"<h1[ >]", dom), f"{source}: no <h1> heading in the rendered page"
        title = re.search(r"^# (.+)$", markdown, re.MULTILINE)
        if title:
            text = re.sub(r"[`*]", "", title.group(1)).strip()
            assert text.split()[0] in dom, f"{source}: heading {text!r} not in the rendered page"
        expected = _code_blocks(markdown)
        rendered = len(re.findall(r"<pre[ >]", dom))
        assert rendered >= expected, f"{source}: {expected} code blocks in the Markdown, {rendered} rendered"
        html_tag = re.search(r"<html[^>]*>", dom).group(0)
        assert "js-focus-visible" in html_tag and "no-js" not in html_tag, f"{source}: the theme's scripts did not run"


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    _require(CHROMIUM is not None, "chromium")
    dom = _dom(site / "reference" / "tasks" / "index.html")
    for name in ("ImageClassifier", "ObjectDetector"):
        assert re.search(rf'id="autotimm\.[\w.]*{name}"', dom), f"no API entry for {name}"
    assert "num_classes" in dom  # an argument table rendered from a docstring
