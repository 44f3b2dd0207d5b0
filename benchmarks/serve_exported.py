"""The ONNX server against the Keras server, side by side in one run (issue 15).

Starts `braintumor serve --run RUN` and `braintumor serve --model EXPORT/model.onnx` as two processes on
loopback, then measures, for each: single-image p50/p95 of POST /predict (sequential, the two servers
interleaved in blocks so background load hits both alike), resident memory of the server process after
warm-up, and errors at --clients concurrent clients over --requests requests. Not a test: the numbers are this
machine's; run it on a quiet one.

    python benchmarks/serve_exported.py --run runs/train/<run> [--onnx runs/export/<export>/model.onnx]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.load_serve import free_port, load, stop_server, synthetic_jpeg, wait_ready  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="train run directory (the Keras server's model)")
    p.add_argument("--onnx", help="its exported model.onnx (default: export it now into a temporary folder)")
    p.add_argument("--single", type=int, default=300, help="sequential single-image requests per server")
    p.add_argument("--requests", type=int, default=2000, help="requests at --clients for the ONNX server")
    p.add_argument("--keras-requests", type=int, default=400, help="the same for the Keras server")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--image", type=Path, help="image to upload (default: a synthetic 512x512 JPEG)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def start(kind: str, target: str):
    import subprocess

    port = free_port()
    entry = "import sys; from braintumor.cli import main; sys.argv[0] = 'braintumor'; main()"
    flag = "--run" if kind == "keras" else "--model"
    cmd = [sys.executable, "-c", entry, "serve", flag, target, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def single(urls: dict[str, str], data: bytes, n: int, block: int = 25) -> dict[str, list[float]]:
    """Sequential requests, alternating servers every ``block`` requests."""
    import httpx

    files = {"file": ("scan.jpg", data, "image/jpeg")}
    times: dict[str, list[float]] = {k: [] for k in urls}
    clients = {k: httpx.Client(base_url=u, timeout=30, trust_env=False) for k, u in urls.items()}
    try:
        for c in clients.values():
            for _ in range(10):
                c.post("/predict", files=files).raise_for_status()
        while min(len(v) for v in times.values()) < n:
            for k, c in clients.items():
                for _ in range(block):
                    t0 = time.perf_counter()
                    c.post("/predict", files=files).raise_for_status()
                    times[k].append((time.perf_counter() - t0) * 1000)
    finally:
        for c in clients.values():
            c.close()
    return times


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = args.image.read_bytes() if args.image else synthetic_jpeg()
    onnx = args.onnx
    if onnx is None:
        from braintumor.commands.export import run_export

        out, _ = run_export(args.run, "onnx", runs_dir=tempfile.mkdtemp(prefix="bench-export-"))
        onnx = str(out / "model.onnx")
    procs = {}
    try:
        procs["keras"] = start("keras", args.run)
        procs["onnx"] = start("onnx", onnx)
        for proc, url in procs.values():
            wait_ready(url, proc)
        urls = {k: url for k, (_, url) in procs.items()}
        times = single(urls, data, args.single)
        result = {"machine_load_1min": __import__("os").getloadavg()[0], "single": {}, "rss_mib": {}, "load": {}}
        for k, t in times.items():
            result["single"][k] = {"p50_ms": statistics.median(t), "p95_ms": float(np.percentile(t, 95)),
                                   "n": len(t)}
            result["rss_mib"][k] = rss_mib(procs[k][0].pid)
        for k, n in (("onnx", args.requests), ("keras", args.keras_requests)):
            if n:
                result["load"][k] = load(urls[k], data, n, args.clients, time_limit=600, warmup=10)
    finally:
        for proc, _ in procs.values():
            stop_server(proc)
    s, m = result["single"], result["rss_mib"]
    result["targets"] = {"onnx_p50_le_keras": s["onnx"]["p50_ms"] <= s["keras"]["p50_ms"],
                         "onnx_rss_le_third_of_keras": m["onnx"] <= m["keras"] / 3,
                         "onnx_zero_errors": result["load"].get("onnx", {}).get("errors", 0) == 0}
    for k in ("keras", "onnx"):
        extra = result["load"].get(k, {})
        print(f"{k:5s}: single p50 {s[k]['p50_ms']:.2f} ms, p95 {s[k]['p95_ms']:.2f} ms; RSS {m[k]:.0f} MiB; "
              f"{extra.get('sent', 0)} req at {args.clients} clients: {extra.get('errors', '-')} errors, "
              f"p50 {extra.get('p50_ms', float('nan')):.1f} ms, {extra.get('throughput_rps', float('nan')):.1f} req/s")
    print("targets:", result["targets"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
