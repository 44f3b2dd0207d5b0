"""Server settings: defaults < BRAINTUMOR_* environment variables < command-line flags (pydantic-settings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

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


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("braintumor_serve_environ", default=None)


class _Environment(EnvSettingsSource):
    """The process environment, or the mapping ``load_settings`` was given (tests, embedding)."""

    def _load_env_vars(self):
        environ = _ENVIRON.get()
        return {(k if self.case_sensitive else k.lower()): v
                for k, v in (os.environ if environ is None else environ).items()
                if not (self.env_ignore_empty and v == "")}


class ServeSettings(BaseSettings):
    """Everything `braintumor serve` can be told; each field is also BRAINTUMOR_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, env_ignore_empty=True, extra="forbid")

    run: str | None = None  # train run directory; None = latest complete run under runs_dir
    model: str | None = None  # an exported model.onnx (braintumor export) to serve instead of a run: no TensorFlow
    runs_dir: str = "runs"
    host: str = "127.0.0.1"  # loopback only unless asked: a clinic network must opt in to exposure
    port: int = 8000
    max_upload_bytes: int = 20 * MiB  # per file
    max_pixels: int = 40_000_000  # width * height before decoding (decompression bombs); 6000x6000 is 36 M
    max_batch_files: int = 16  # files in one /predict/batch request
    concurrency: int = Field(default_factory=default_concurrency)  # images decoded + inferred at once
    queue_timeout: float = 30.0  # seconds a request may wait for a free slot before 503
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()  # none: no CORS headers at all; env: comma-separated
    log_level: str = "info"
    # Opt-in access control: every route but /health then needs the key (X-API-Key or Authorization: Bearer).
    # From the environment or a file only, never a flag: command lines are visible to every user (ps).
    api_key: SecretStr | None = None
    api_key_file: str | None = None
    metrics: bool = False  # opt-in Prometheus /metrics (behind the key when there is one)
    notumor_doubt: float | None = None  # overrides the run's (or export's) eval.notumor_doubt; None keeps it

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, _Environment(settings_cls)  # flags (init) win over the environment

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        return tuple(s.strip() for s in v.split(",") if s.strip()) if isinstance(v, str) else v

    @field_validator("port", "max_upload_bytes", "max_pixels", "max_batch_files", "concurrency", mode="before")
    @classmethod
    def _digit_groups(cls, v: Any) -> Any:
        return v.strip().replace("_", "") if isinstance(v, str) else v  # 20_000_000 as Python writes it

    @model_validator(mode="after")
    def _in_range(self) -> ServeSettings:
        checks = [
            ("port", 0 <= self.port <= 65535, "0-65535"),
            ("max_upload_bytes", self.max_upload_bytes > 0, "a positive number of bytes"),
            ("max_pixels", self.max_pixels > 0, "a positive number of pixels"),
            ("max_batch_files", self.max_batch_files > 0, "at least 1"),
            ("concurrency", self.concurrency > 0, "at least 1"),
            ("queue_timeout", self.queue_timeout > 0, "a positive number of seconds"),
            ("notumor_doubt", self.notumor_doubt is None or 0 < self.notumor_doubt < 1, "a p(tumour) between 0 "
             "and 1"),
            ("log_level", self.log_level in ("critical", "error", "warning", "info", "debug"),
             "critical, error, warning, info or debug"),
        ]
        if self.api_key is not None and not self.api_key.get_secret_value().strip():
            raise ConfigError(f"serve setting api_key ({ENV_PREFIX}API_KEY) is empty; set a key or unset it")
        if self.api_key is not None and self.api_key_file:
            raise ConfigError(f"give the API key once: {ENV_PREFIX}API_KEY or --api-key-file, not both")
        for name, ok, valid in checks:
            if not ok:  # a ConfigError passes through pydantic untouched
                raise ConfigError(f"serve setting {name}={getattr(self, name)!r} is invalid; use {valid}")
        return self

    def key(self) -> bytes | None:
        """The API key clients must send, or None (no access control). Read from the key file each call."""
        if self.api_key is not None:
            return self.api_key.get_secret_value().strip().encode()
        if not self.api_key_file:
            return None
        path = Path(self.api_key_file)
        try:
            key = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"API key file {path} cannot be read ({type(e).__name__}); check the path and "
                              "its permissions") from None
        if not key:
            raise ConfigError(f"API key file {path} is empty; write the key into it")
        return key.encode()

    @property
    def max_request_bytes(self) -> int:
        """Whole-request cap for /predict/batch: every file at its limit plus multipart overhead."""
        return self.max_upload_bytes * self.max_batch_files + MiB

    def public(self) -> dict[str, Any]:
        """The limits a client may need to know (for /model); never paths."""
        return {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                "max_batch_files": self.max_batch_files}


def load_settings(flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Settings from the environment (``environ``, default the process's), then from flags that were given
    (None means 'not given'); a bad value is a ConfigError naming the setting, its variable and the value."""
    known = set(ServeSettings.model_fields)
    given = {}
    for k, v in (flags or {}).items():
        if k not in known:
            raise ConfigError(f"unknown serve setting {k!r}; known: {', '.join(sorted(known))}")
        if v is not None:
            given[k] = tuple(v) if isinstance(v, list) else v
    token = _ENVIRON.set(environ)
    try:
        return ServeSettings(**given)
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        raise ConfigError(f"serve setting {name}={err['input']!r} (flag --{name.replace('_', '-')} or "
                          f"{ENV_PREFIX}{name.upper()}) is invalid: {err['msg']}") from None
    finally:
        _ENVIRON.reset(token)
