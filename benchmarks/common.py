"""Shared helpers for the benchmarks: the machine, medians of repeats, timing callbacks, data folders."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# Full shared training folder (5,708 MRI images, 4 classes); every script takes --data to point elsewhere.
DEFAULT_DATA = "/work/shared/data/brain-tumor-mri/Training"
DATA_HELP = f"folder of class sub-folders (default: {DEFAULT_DATA})"
ARCHS = ("customnet", "resnet50", "mobilenet", "densenet", "efficientnet")
REPO = Path(__file__).resolve().parent.parent


def shown_path(path: str | Path) -> str:
    """A path as results.md records it: relative to the repository, else ``.../<parent>/<folder>``, so the
    file says which data was used without recording the layout of the machine it ran on."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return f".../{p.parent.name}/{p.name}" if p.parent.name else p.name


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter out of the benchmark output (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, load and library versions: what every results file starts with."""
    import keras
    import numpy
    import tensorflow as tf

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(), "usable_cores": usable, "cpu_model": cpu_model(), "memory_gib": mem_gib,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": numpy.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
    }


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Median of the repeats, with their range and every value (so a reader can judge the spread)."""
    values = [float(v) for v in values]
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values), "values": [round(v, digits) for v in values]}


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def subset_folder(src: str | Path, per_class: int, dst: str | Path) -> Path:
    """A folder of symbolic links to the first ``per_class`` images of each class of ``src`` (quick mode)."""
    from braintumor.data import IMAGE_EXTENSIONS

    src, dst = Path(src), Path(dst)
    for cls in sorted(d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(p for p in cls.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[:per_class]
        (dst / cls.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            link = dst / cls.name / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
    return dst


def check_data(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        sys.exit(f"error: data folder {p} does not exist; pass --data DIR (one sub-folder per class)")
    return p


def batch_clock():
    """A Keras callback recording the wall time of every training step (data wait included)."""
    import keras

    class BatchClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)

    return BatchClock()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
