"""Run directories: layout, atomic writes, metadata, and finding runs again."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy
import numpy as np

from . import __version__
from .errors import RunError


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def new_run_dir(runs_dir: str | Path, command: str, arch: str | None = None, name: str | None = None) -> Path:
    """Create ``runs/<command>/<timestamp>[-<arch>][-<name>]`` and return it; never reuses an existing folder."""
    parent = Path(runs_dir) / command
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = "-".join(_slug(p) for p in (stamp, arch, name) if p)
    for i in range(1000):
        path = parent / (base if i == 0 else f"{base}-{i + 1}")
        try:
            path.mkdir()  # atomic: fails if another run took the name
            return path
        except FileExistsError:
            continue
    raise RunError(f"could not create a new run directory under {parent}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would have given the file


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes owner-only files; a run's files are as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` as plain JSON values: NumPy scalars and arrays as Python numbers and lists, paths as strings, and
    NaN or infinity (an AUC on a one-class split, a loss that never became finite) as null, which JSON has."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """JSON that any reader parses (``allow_nan=False`` after ``json_safe``), written atomically."""
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False, default=_refuse) + "\n")


def _refuse(o: Any):
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV file (the csv module's dialect: quoted when needed, CRLF line ends) written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_csv_dicts(path: str | Path, header: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """``write_csv`` for rows given as dicts keyed by the header."""
    write_csv(path, header, ([r[k] for k in header] for r in rows))


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a GitHub Markdown table; cells are written with ``str``."""
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(v) for v in r) + " |" for r in rows)]


def atomic_save_model(model, path: str | Path) -> None:
    """``model.save`` to a temporary .keras file, then rename: an interrupt never leaves a broken model."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
            timeout=5,
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import keras  # lazy: TensorFlow takes seconds to import
    import tensorflow as tf

    return {
        "braintumor": __version__, "python": sys.version.split()[0], "tensorflow": tf.__version__,
        "keras": keras.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_meta(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Create or update ``meta.json``, merging ``fields`` into what is there."""
    meta = read_meta(run_dir) if (run_dir / "meta.json").is_file() else {}
    meta.update(fields)
    atomic_write_json(run_dir / "meta.json", meta)
    return meta


def read_json(path: str | Path, missing: str | None = None) -> dict[str, Any]:
    """A run's JSON file; a missing or damaged one is a RunError (``missing`` words the first case)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise RunError(missing or f"{path.parent} has no {path.name}") from e
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is damaged: {e}") from e


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / "meta.json", f"{run_dir} is not a run directory (no meta.json)")


def resolve_run(run: str | Path | None, runs_dir: str | Path = "runs", command: str = "train",
                need_model: bool = True) -> Path:
    """A run directory from a path, or the latest complete ``runs/<command>/*`` when ``run`` is None/'latest'."""
    if run in (None, "latest"):
        parent = Path(runs_dir) / command
        candidates = sorted((p for p in parent.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
        done = [p for p in candidates if _status(p) == "complete"]
        if not done:
            raise RunError(f"no complete run under {parent}; train one first or pass --run DIR")
        return done[-1]
    path = Path(run)
    if not path.is_dir():
        raise RunError(f"run directory {path} does not exist")
    meta = read_meta(path)
    kfold_models = meta.get("command") == "kfold" and any(path.glob("fold_*/model.keras"))
    if need_model and not (path / "model.keras").is_file() and not kfold_models:
        raise RunError(f"{path} has no model.keras (status: {meta.get('status', 'unknown')})")
    return path


def _status(path: Path) -> str | None:
    try:
        return read_meta(path).get("status")
    except RunError:
        return None


def start_run(run_dir: Path, cfg, command: str, **fields: Any) -> None:
    """Write the resolved config.yaml first (when the command has a config: ``cfg`` may be None), then meta.json
    marked running with the versions and commit it ran with. Commands call it through ``engine.run.Run``."""
    meta: dict[str, Any] = {"command": command, "status": "running", "started": now()}
    if cfg is not None:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        meta["seed"] = cfg.seed
    write_meta(run_dir, **{**meta, "git_commit": git_commit(), "versions": versions(), **fields})


class run_status:
    """Context manager: marks meta.json complete on success (or ``self.done``, e.g. partial, when the body says
    only part of the work was asked for), interrupted on Ctrl-C, failed on any error."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.done = "complete"

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            write_meta(self.run_dir, status=self.done, finished=now())
        elif issubclass(exc_type, KeyboardInterrupt):
            write_meta(self.run_dir, status="interrupted", finished=now(),
                       error="interrupted by the user; model.keras (if present) is the best model so far")
        else:
            write_meta(self.run_dir, status="failed", finished=now(), error=f"{exc_type.__name__}: {exc}")
        return False


def write_skipped(out_dir: Path, skipped: list[tuple[str, str]]) -> None:
    """skipped.txt: one unreadable file per line with the reason; written only when something was skipped."""
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "".join(f"{p}\t{why}\n" for p, why in skipped))


def fold_complete(fold_dir: Path) -> bool:
    """A fold counts as done only when its own meta.json says complete and its model and metrics exist."""
    try:
        status = read_meta(fold_dir).get("status")
    except RunError:
        return False
    return status == "complete" and all((fold_dir / f).is_file() for f in ("model.keras", "metrics.json",
                                                                            "predictions.csv"))
