"""A run that owns its directory: created, started, marked finished, its meta typed and its results read back.

Every command makes its output folder through ``Run.create`` and wraps its work in ``Run.marking()``, so each
``meta.json`` says the same things the same way (command, status, started, finished, error); readers
(``compare``, ``kfold --resume``) open a run with ``Run.open`` and ask its ``info`` rather than guessing from which
files exist. The bytes on disk come from ``runs.py`` (atomic writers, NaN-safe JSON, the folder naming).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RunError
from ..runs import (
    atomic_write_json,
    new_run_dir,
    read_json,
    read_meta,
    run_status,
    start_run,
    write_meta,
)

# complete: all asked for was done; planned: kfold --plan-only; partial: kfold --only-fold left folds to others
STATUSES = ("running", "planned", "partial", "complete", "interrupted", "failed")


@dataclass(frozen=True)
class RunMeta:
    """The fields every run's meta.json carries, typed; ``fields`` is the whole file (command-specific keys too)."""

    command: str | None
    status: str | None
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    fields: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, meta: dict[str, Any]) -> RunMeta:
        return cls(meta.get("command"), meta.get("status"), meta.get("started"), meta.get("finished"),
                   meta.get("error"), dict(meta))

    @property
    def complete(self) -> bool:
        """Complete, or written before runs had a status (nothing says otherwise)."""
        return self.status in (None, "complete")


class Run:
    """A run directory: ``runs/<command>/<timestamp>-<arch>[-<name>]/`` and what it holds."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    # --- making and marking ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, runs_dir: str | Path, command: str, arch: str | None = None, name: str | None = None,
               cfg=None, **fields: Any) -> Run:
        """A new, never reused directory under ``runs_dir/command``, started (see ``start``)."""
        run = cls(new_run_dir(runs_dir, command, arch, name))
        run.start(command, cfg, **fields)
        return run

    def start(self, command: str, cfg=None, **fields: Any) -> None:
        """Write the resolved config.yaml first (when the command has a config), then meta.json marked running,
        with the versions and commit it ran with."""
        start_run(self.path, cfg, command, **fields)

    def marking(self) -> run_status:
        """Context manager: complete on success (or ``.done``), interrupted on Ctrl-C, failed on any error."""
        return run_status(self.path)

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into meta.json; returns the whole of it."""
        return write_meta(self.path, **fields)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    # --- reading back ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """An existing run; RunError when ``path`` is missing, not a folder, or has no readable meta.json."""
        path = Path(path)
        if not path.exists():
            raise RunError(f"{path} does not exist")
        if not path.is_dir():
            raise RunError(f"{path} is not a directory")
        run = cls(path)
        run.meta  # noqa: B018  (RunError here: not a run directory, or a damaged meta.json)
        return run

    @property
    def meta(self) -> dict[str, Any]:
        return read_meta(self.path)

    @property
    def info(self) -> RunMeta:
        return RunMeta.of(self.meta)

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read_json(self, name: str, missing: str | None = None) -> dict[str, Any]:
        """One of the run's JSON results; RunError when missing (``missing`` words it) or damaged."""
        return read_json(self.path / name, missing)

    def check_complete(self) -> None:
        """RunError unless the run finished what it was asked to do."""
        info = self.info
        if not info.complete:
            why = f": {info.error}" if info.error else ""
            raise RunError(f"{self.path} is incomplete (status: {info.status}{why}); nothing to compare until it "
                           "finishes")
