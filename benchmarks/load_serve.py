"""Load test for `braintumor serve`: N requests at C concurrent clients on loopback, against the raw model.

Starts `braintumor serve` for a run in its own process on a free 127.0.0.1 port (or uses --url), measures the
raw single-image model call in this process while the server is idle (the ratio baseline), then sends
--requests POST /predict requests at each --concurrency level and prints p50/p95/p99 latency, throughput and
errors. Bounded: at most --requests and --time-limit seconds per level. Not a test: run it on a quiet machine.

    python benchmarks/load_serve.py --run runs/train/<run> --requests 300 --concurrency 1,8
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="latest", help="train run directory, or 'latest' under --runs-dir")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (max 100000)")
    p.add_argument("--concurrency", default="1,8", help="comma-separated client counts, e.g. 1,8")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per concurrency level, at most")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests before each level")
    p.add_argument("--raw-calls", type=int, default=200, help="timed raw model calls for the baseline")
    p.add_argument("--image", type=Path, help="image to upload (default: a synthetic 512x512 grayscale JPEG)")
    p.add_argument("--url", help="use a server already running at this loopback URL instead of starting one")
    p.add_argument("--server-concurrency", type=int, help="the server's --concurrency (default: its default)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not 1 <= args.requests <= 100_000 or not all(1 <= c <= 256 for c in args.levels):
        p.error("--requests must be 1-100000 and each concurrency 1-256")
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        p.error("--url must be a loopback address: this benchmark never sends images off the machine")
    return args


def synthetic_jpeg(size: int = 512, seed: int = 0) -> bytes:
    """An MRI-like slice: dark noise with a bright blob, the size public datasets typically use."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = (rng.random((size, size)) * 60).astype(np.uint8)
    img[size // 4: size // 2, size // 3: size // 3 + size // 5] = 210
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, server_concurrency: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    entry = "import sys; from braintumor.cli import main; sys.argv[0] = 'braintumor'; main()"
    cmd = [sys.executable, "-c", entry, "serve", "--run", str(run_dir), "--port", str(port),
           "--log-level", "warning"]
    if server_concurrency:
        cmd += ["--concurrency", str(server_concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=5, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"server exited with code {proc.returncode}:\n{proc.stderr.read()[-3000:]}")
            try:
                if http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def raw_baseline(run_dir: Path, data: bytes, calls: int) -> dict:
    """The model alone: one compiled single-image call as the server makes it; decode+call for context."""
    from braintumor.serve.predictor import Predictor

    predictor = Predictor.load(run_dir)
    x = predictor.image(data)[0][None]  # (array, input stats)
    for _ in range(10):
        predictor.infer(x)
    call = []
    for _ in range(calls):
        t0 = time.perf_counter()
        predictor.infer(x)
        call.append((time.perf_counter() - t0) * 1000)
    decode = []
    for _ in range(max(10, calls // 4)):
        t0 = time.perf_counter()
        predictor.predict(data)
        decode.append((time.perf_counter() - t0) * 1000)
    return {"arch": predictor.run.meta.get("arch"), "image_size": predictor.size,
            "channels": predictor.channels,
            "model_call_ms_p50": statistics.median(call), "model_call_ms_p95": pct(call, 95),
            "decode_and_call_ms_p50": statistics.median(decode)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load(url: str, data: bytes, requests: int, clients: int, time_limit: float, warmup: int) -> dict:
    """``requests`` POST /predict from ``clients`` threads (keep-alive connection each) in ``time_limit``."""
    import httpx

    files = {"file": ("scan.jpg", data, "image/jpeg")}
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
        for _ in range(warmup):
            http.post("/predict", files=files)

    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + time_limit

    def worker():
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as http:
            while True:
                with lock:
                    if issued[0] >= requests or time.monotonic() > deadline:
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                try:
                    r = http.post("/predict", files=files)
                    ms = (time.perf_counter() - t0) * 1000
                    ok = r.status_code == 200
                    why = None if ok else f"HTTP {r.status_code}"
                except httpx.HTTPError as e:
                    ok, why, ms = False, type(e).__name__, 0.0
                with lock:
                    if ok:
                        latencies.append(ms)
                        server_ms.append(r.json()["latency_ms"])
                    else:
                        errors[why] = errors.get(why, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": clients, "sent": issued[0], "ok": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "seconds": wall, "throughput_rps": len(latencies) / wall if wall else 0.0,
            "p50_ms": pct(latencies, 50), "p95_ms": pct(latencies, 95), "p99_ms": pct(latencies, 99),
            "server_latency_ms_p50": pct(server_ms, 50)}


def main(argv=None) -> None:
    args = parse_args(argv)
    from braintumor.runs import resolve_run

    run_dir = resolve_run(None if args.run == "latest" else args.run, args.runs_dir)
    data = args.image.read_bytes() if args.image else synthetic_jpeg()
    proc, url = (None, args.url) if args.url else start_server(run_dir, args.server_concurrency)
    try:
        wait_ready(url, proc)
        base = raw_baseline(run_dir, data, args.raw_calls)  # while the server idles
        results = [load(url, data, args.requests, c, args.time_limit, args.warmup) for c in args.levels]
    finally:
        if proc is not None:
            stop_server(proc)

    from braintumor.serve.settings import available_cpus

    print(f"\n{base['arch']} at {base['image_size']}px x{base['channels']} from {run_dir.name}; "
          f"{available_cpus()} CPUs; upload {len(data):,} bytes; server {url}")
    print(f"raw single-image model call: p50 {base['model_call_ms_p50']:.2f} ms, "
          f"p95 {base['model_call_ms_p95']:.2f} ms; decode+call p50 {base['decode_and_call_ms_p50']:.2f} ms")
    head = f"{'C':>3} {'ok':>6} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8} " \
           f"{'p50/raw':>8} {'server p50':>10}"
    print(head)
    for r in results:
        ratio = r["p50_ms"] / base["model_call_ms_p50"]
        print(f"{r['clients']:>3} {r['ok']:>6} {r['errors']:>6} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['throughput_rps']:>8.1f} {ratio:>8.1f} "
              f"{r['server_latency_ms_p50']:>10.2f}" + (f"  {r['error_kinds']}" if r["errors"] else ""))
        if r["sent"] < args.requests:
            print(f"    (time limit reached after {r['sent']} of {args.requests} requests)")
    if args.json:
        out = {"run": run_dir.name, "baseline": base, "levels": results}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
