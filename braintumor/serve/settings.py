"""Server settings: dataclass defaults < BRAINTUMOR_* environment variables < command-line flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

ENV_PREFIX = "BRAINTUMOR_"
MiB = 1024 * 1024


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask in containers), not the host's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_concurrency() -> int:
    # TensorFlow already spreads one call over every core: more parallel calls than cores only add queueing
    # inside TF and memory for decoded images.
    return max(1, min(8, available_cpus()))


@dataclass(frozen=True)
class ServeSettings:
    """Everything `braintumor serve` can be told; each field is also BRAINTUMOR_<FIELD> in the environment."""

    run: str | None = None  # train run directory; None = latest complete run under runs_dir
    runs_dir: str = "runs"
    host: str = "127.0.0.1"  # loopback only unless asked: a clinic network must opt in to exposure
    port: int = 8000
    max_upload_bytes: int = 20 * MiB  # per file
    max_pixels: int = 40_000_000  # width * height before decoding (decompression bombs); 6000x6000 is 36 M
    max_batch_files: int = 16  # files in one /predict/batch request
    concurrency: int = field(default_factory=default_concurrency)  # images decoded + inferred at once
    queue_timeout: float = 30.0  # seconds a request may wait for a free slot before 503
    cors_origins: tuple[str, ...] = ()  # none: no CORS headers at all
    log_level: str = "info"

    def __post_init__(self):
        checks = [
            ("port", 0 <= self.port <= 65535, "0-65535"),
            ("max_upload_bytes", self.max_upload_bytes > 0, "a positive number of bytes"),
            ("max_pixels", self.max_pixels > 0, "a positive number of pixels"),
            ("max_batch_files", self.max_batch_files > 0, "at least 1"),
            ("concurrency", self.concurrency > 0, "at least 1"),
            ("queue_timeout", self.queue_timeout > 0, "a positive number of seconds"),
            ("log_level", self.log_level in ("critical", "error", "warning", "info", "debug"),
             "critical, error, warning, info or debug"),
        ]
        for name, ok, valid in checks:
            if not ok:
                raise ConfigError(f"serve setting {name}={getattr(self, name)!r} is invalid; use {valid}")

    @property
    def max_request_bytes(self) -> int:
        """Whole-request cap for /predict/batch: every file at its limit plus multipart overhead."""
        return self.max_upload_bytes * self.max_batch_files + MiB

    def public(self) -> dict[str, Any]:
        """The limits a client may need to know (for /model); never paths."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "max_batch_files": self.max_batch_files}


def _parse(name: str, raw: str, kind: Any) -> Any:
    raw = raw.strip()
    try:
        if kind == "int":
            return int(raw.replace("_", ""))
        if kind == "float":
            return float(raw)
        if kind == "tuple[str, ...]":
            return tuple(s.strip() for s in raw.split(",") if s.strip())
        return raw or None if kind == "str | None" else raw
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from None


def load_settings(flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Settings from the environment, then from flags that were given (None means 'not given')."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(ServeSettings):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _parse(f.name, raw, f.type)
    known = {f.name for f in dataclasses.fields(ServeSettings)}
    for k, v in (flags or {}).items():
        if k not in known:
            raise ConfigError(f"unknown serve setting {k!r}; known: {', '.join(sorted(known))}")
        if v is not None:
            values[k] = tuple(v) if isinstance(v, list) else v
    return ServeSettings(**values)
