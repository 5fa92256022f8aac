"""`autotimm runs list [DIR]` and `autotimm runs show RUN`: the runs on disk, from the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser

from autotimm.runs.record import Run, RunRecordError, find_runs
from autotimm.runs.summary import summarize

__all__ = ["runs_command"]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="autotimm runs", description="List the runs in a folder, or show one run.")
    commands = parser.add_subcommands(dest="command")
    listing = ArgumentParser(description="One row per run found at any depth under DIR (default: ./runs, or .).")
    listing.add_argument("dir", nargs="?", default=None, help="The folder to search.")
    commands.add_subcommand("list", listing, help=listing.description)
    show = ArgumentParser(description="A run's status, best result, checkpoints and its epochs.")
    show.add_argument("run", help="A run folder, or a run's name found under --dir.")
    show.add_argument("--dir", default=None, help="Where to look for a run given by name (default: ./runs, or .).")
    commands.add_subcommand("show", show, help=show.description)
    return parser


def _default_dir(given: str | None) -> Path:
    if given is not None:
        return Path(given)
    return Path("runs") if Path("runs").is_dir() else Path(".")


def _find(run: str, folder: Path) -> Path:
    if (Path(run) / "run.json").is_file():
        return Path(run)
    matches = [path for path in find_runs(folder) if path.name == run] if folder.is_dir() else []
    if not matches:
        sys.exit(f"autotimm runs show: no run {run!r} (a run folder, or a run's name under {str(folder)!r}).")
    if len(matches) > 1:
        sys.exit(f"autotimm runs show: {len(matches)} runs are named {run!r}: {', '.join(map(str, matches))}.")
    return matches[0]


def _show(path: Path) -> None:
    try:
        run = Run(path)
    except RunRecordError as e:
        sys.exit(f"autotimm runs show: {e}")
    record = run.record
    lines = [
        f"run          {run.name}",
        f"folder       {run.path}",
        f"status       {run.status}" + ("" if record.get("alive") is None else f" (process alive: {record['alive']})"),
    ]
    for key in ("created_at", "started_at", "ended_at", "duration_s", "epochs_completed", "pid", "host"):
        if record.get(key) is not None:
            lines.append(f"{key.removesuffix('_completed'):<12} {record[key]}")
    if record.get("retry_of"):
        lines.append(f"retry_of     {record['retry_of'].get('run')} ({record['retry_of'].get('run_dir')})")
    if run.error:
        lines.append(f"error        {run.error.get('type')} in {run.error.get('stage')}: {run.error.get('message')}")
    if run.best:
        lines.append(f"best         {run.best['monitor']} = {run.best['value']}")
    for which, file in run.checkpoints.items():
        lines.append(f"{which + '.ckpt':<12} {file or '-'}")
    if record.get("tuning"):
        lines.append(f"tuning       {record['tuning']}")
    for key, value in ((run.test or {}).get("metrics") or {}).items():
        lines.append(f"{key:<12} {value}")
    print("\n".join(lines) + "\n")
    summarize(path)


def runs_command(args: Sequence[str]) -> None:
    """Run `autotimm runs ...` with `args` (the words after `runs`).

    Examples:
        >>> runs_command(["list", "outputs"])  # doctest: +SKIP
        run_id               status     epochs  started_at                 ...
    """
    config = _parser().parse_args(list(args))
    if config.command == "list":
        folder = _default_dir(config.list.dir)
        try:
            summarize(folder)
        except FileNotFoundError as e:
            sys.exit(f"autotimm runs list: {e}")
    else:
        _show(_find(config.show.run, _default_dir(config.show.dir)))
