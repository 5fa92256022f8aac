"""Demo data folders: made once, reused when asked again, never written over a user's files."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST_NAME", "DemoKind", "build_demo_folder"]

MANIFEST_NAME = "autotimm_demo.json"


@dataclass(frozen=True)
class DemoKind:
    """What a demo maker writes: the manifest's `kind` and `version`, and how to name it."""

    kind: str
    version: int
    title: str  # e.g. "digits demo", used in messages
    maker: str  # the public function, used in messages
    is_complete: Callable[[Path, dict[str, Any]], bool]


def build_demo_folder(
    root: Path, params: dict[str, Any], spec: DemoKind, write: Callable[[Path], dict[str, Any]]
) -> tuple[Path, dict[str, Any] | None]:
    """Return `root` holding a complete demo made with `params`, writing it if needed.

    `write(folder)` writes the files into an empty staging folder and returns the counts kept
    in the manifest. The staging folder is a hidden sibling renamed into place, so a crash
    leaves no half-written demo. Returns the counts, or `None` when an existing folder was reused.

    Raises:
        FileExistsError: If `root` is a file, or a non-empty folder that is not this kind of demo.
        ValueError: If `root` holds a demo made with other parameters, or an incomplete one.
    """
    manifest = _read_manifest(root, spec)
    if manifest is not None:
        return _reuse(root, manifest, params, spec), None
    root.parent.mkdir(parents=True, exist_ok=True)
    # A hidden sibling with a unique name (created with the usual permissions, unlike `mkdtemp`).
    staging = root.parent / f".{root.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    staging.mkdir()
    try:
        counts = write(staging)
        manifest = {"kind": spec.kind, "version": spec.version, "params": params, "counts": counts}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        if root.is_dir():
            root.rmdir()  # empty (checked above); fails if someone wrote into it meanwhile
        os.replace(staging, root)
    except OSError:
        # Another process may have built the same folder concurrently: accept it if it matches.
        manifest = _read_manifest(root, spec)
        if manifest is None:
            raise
        return _reuse(root, manifest, params, spec), None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root, counts


def _read_manifest(root: Path, spec: DemoKind) -> dict[str, Any] | None:
    """Return the manifest of a demo folder, `None` for a missing or empty folder; raise for anything else."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise FileExistsError(f"'{root}' is a file, not a folder; pass a new or empty folder to {spec.maker}.")
    manifest_path = root / MANIFEST_NAME
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise FileExistsError(f"'{manifest_path}' is not a readable autotimm demo manifest: {e}.") from e
        if isinstance(manifest, dict) and manifest.get("kind") == spec.kind:
            return manifest
    if any(root.iterdir()):
        raise FileExistsError(
            f"'{root}' exists and is not an autotimm {spec.title} folder (no {MANIFEST_NAME} of kind "
            f"{spec.kind!r}); refusing to write into it. Pass a new or empty folder."
        )
    return None


def _reuse(root: Path, manifest: dict[str, Any], params: dict[str, Any], spec: DemoKind) -> Path:
    """Return `root` if it holds a complete demo made with `params`; raise otherwise."""
    if manifest.get("version") != spec.version or manifest.get("params") != params:
        raise ValueError(
            f"'{root}' holds a {spec.title} made with {manifest.get('params')}, not {params}. "
            "Pass another folder, or delete this one to rebuild it."
        )
    if not spec.is_complete(root, manifest):
        raise ValueError(f"'{root}' holds an incomplete {spec.title} (files were removed). Delete it to rebuild it.")
    return root
