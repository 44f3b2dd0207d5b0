"""`braintumor serve`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ..exported import load_exported
from ..runs import resolve_run
from ..serve.settings import load_settings
from .app import command
from .common import RunsDir, console


def _opt(flag: str, help: str, *short: str):
    env = "BRAINTUMOR_" + flag.lstrip("-").replace("-", "_").upper()
    return typer.Option(flag, *short, help=f"{help} Env: {env}.")


Run = Annotated[str | None, _opt("--run", "Train run directory to serve, a kfold run directory (the mean of its "
                                           "fold models), or 'latest' (default).", "-r")]
Model = Annotated[str | None, _opt("--model", "An exported model.onnx (braintumor export) to serve instead of a run: "
                                  "ONNX Runtime, no TensorFlow; /cam answers 501.", "-m")]
ApiKeyFile = Annotated[str | None, _opt("--api-key-file", "File holding the API key every route but /health "
                                        "then needs (header X-API-Key). Or set BRAINTUMOR_API_KEY; never a flag: "
                                        "command lines are visible to other users.")]
Metrics = Annotated[bool | None, typer.Option("--metrics/--no-metrics", help="Prometheus metrics at /metrics "
                                              "(default off). Env: BRAINTUMOR_METRICS.")]
Host = Annotated[str | None, _opt("--host", "Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                                  "exposes it to the network).")]
Port = Annotated[int | None, _opt("--port", "TCP port (default 8000).", "-p")]
MaxUploadBytes = Annotated[int | None, _opt("--max-upload-bytes", "Largest accepted file in bytes "
                                            "(default 20 MiB).")]
MaxPixels = Annotated[int | None, _opt("--max-pixels", "Largest accepted image in width x height pixels, "
                                       "checked before decoding (default 40,000,000).")]
MaxBatchFiles = Annotated[int | None, _opt("--max-batch-files", "Most files in one /predict/batch request "
                                           "(default 16).")]
Concurrency = Annotated[int | None, _opt("--concurrency", "Images decoded and inferred at once (default: the "
                                         "CPUs available, at most 8).")]
QueueTimeout = Annotated[float | None, _opt("--queue-timeout", "Seconds a request may wait for a free slot "
                                            "before 503 (default 30).")]
CorsOrigin = Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow browser pages from this "
                                                      "origin (repeatable; default: none, no CORS headers). "
                                                      "Env: BRAINTUMOR_CORS_ORIGINS, comma-separated.")]
NotumorDoubt = Annotated[float | None, _opt("--notumor-doubt", "Say uncertain, not notumor, when p(tumour) = "
                                           "1 - p(notumor) is at least this: a site's operating point (kfold's "
                                           "summary suggests one). Default: the run's or export's "
                                           "eval.notumor_doubt (null: off).")]
LogLevel = Annotated[str | None, _opt("--log-level", "critical, error, warning, info (default) or debug.")]


@command("serve")
def serve(run: Run = None, model: Model = None, host: Host = None, port: Port = None,
          max_upload_bytes: MaxUploadBytes = None,
          max_pixels: MaxPixels = None, max_batch_files: MaxBatchFiles = None,
          concurrency: Concurrency = None, queue_timeout: QueueTimeout = None, cors_origin: CorsOrigin = None,
          log_level: LogLevel = None, api_key_file: ApiKeyFile = None, metrics: Metrics = None,
          notumor_doubt: NotumorDoubt = None, runs_dir: RunsDir = None) -> None:
    """Serve a trained model over HTTP: /predict, /predict/batch, /cam, /model, /health, a page at /, /docs.

    Example: braintumor serve --run runs/train/20260101-120000-customnet --port 8000;
    an exported model without TensorFlow: braintumor serve --model runs/export/<run>/model.onnx
    """
    settings = load_settings(dict(
        run=None if run == "latest" else run, model=model, host=host, port=port, max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels, max_batch_files=max_batch_files, concurrency=concurrency,
        queue_timeout=queue_timeout, cors_origins=cors_origin or None, log_level=log_level,
        api_key_file=api_key_file, metrics=metrics, notumor_doubt=notumor_doubt,
        runs_dir=str(runs_dir) if runs_dir else None))
    # Fail here, in one red line, rather than inside the server's start-up.
    settings.key()
    if settings.model:
        if settings.run:
            raise ConfigError("give --model (an exported file) or --run (a run directory), not both")
        served = settings.model
        meta = load_exported(settings.model).meta
    else:
        from ..models.loading import load_run  # lazy: loads TensorFlow; --help and the ONNX server stay light

        run_dir = resolve_run(None if settings.run == "latest" else settings.run, Path(settings.runs_dir))
        served, meta = run_dir, load_run(run_dir, with_model=False).meta
        settings = settings.model_copy(update={"run": str(run_dir)})

    shown = "localhost" if settings.host in ("127.0.0.1", "::1") else settings.host
    url = f"http://{shown}:{settings.port}/"
    console.print(f"serving [bold]{meta.get('arch')}[/] from {served} at [bold]{url}[/] (docs at /docs); "
                  "Ctrl-C stops", highlight=False, soft_wrap=True)
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {settings.host}: reachable from the network"
                      f"{'' if settings.key() else ', without authentication (set BRAINTUMOR_API_KEY)'}[/]",
                      soft_wrap=True)
    run_server(settings)


def run_server(settings) -> None:
    """uvicorn in this process; the app loads and warms up the model in its lifespan, before any request."""
    import uvicorn  # the serve extra is optional
    from uvicorn.config import LOGGING_CONFIG

    from ..serve.app import create_app  # lazy: the serve extra (FastAPI) is optional

    log_config = copy.deepcopy(LOGGING_CONFIG)
    # Every braintumor line carries the id of the request it was written in (X-Request-ID in the response).
    log_config["filters"] = {"request_id": {"()": "braintumor.serve.middleware.RequestIdFilter"}}
    log_config["formatters"]["braintumor"] = {"()": "uvicorn.logging.DefaultFormatter",
                                              "fmt": "%(levelprefix)s [%(request_id)s] %(message)s"}
    log_config["handlers"]["braintumor"] = {"formatter": "braintumor", "class": "logging.StreamHandler",
                                            "stream": "ext://sys.stderr", "filters": ["request_id"]}
    log_config["loggers"]["braintumor"] = {"handlers": ["braintumor"], "level": settings.log_level.upper(),
                                           "propagate": False}
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=log_config, access_log=False, server_header=False, timeout_graceful_shutdown=10)
