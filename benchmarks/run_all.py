"""Run every benchmark, each in a fresh Python process, and write benchmarks/results.md (``make bench``).

Sized for 2 CPU cores in under 15 minutes: the pipeline benchmark adapts its epoch length to a time budget,
the inference benchmark times a small real CustomNet run, and the memory benchmark trains on the whole folder
but stops the epoch after a few steps. ``--quick`` is a smoke test of the scripts (a few minutes; its
numbers mean nothing and it writes benchmarks/results-quick.md unless --out says otherwise).

    python benchmarks/run_all.py                       # the real thing -> benchmarks/results.md
    python benchmarks/run_all.py --data DIR --quick    # smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
SECTIONS = ("pipeline", "inference", "memory")
TARGET_RATIO, TARGET_SERVE, TARGET_RSS_GIB = 0.90, 2.0, 3.0  # serving: issue 23, gate on


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=common.DEFAULT_DATA, help=common.DATA_HELP)
    p.add_argument("--quick", action="store_true", help="smoke-test every script with tiny settings")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--pipeline-budget", type=float, default=360, help="seconds for the pipeline benchmark")
    p.add_argument("--total-budget", type=float, default=14 * 60,
                   help="seconds for everything; the memory benchmark (last) drops repeats to fit")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results.md, or "
                                               "benchmarks/results-quick.md with --quick)")
    return p.parse_args(argv)


def run_section(name: str, args, json_path: Path, left: float) -> tuple[dict | None, str | None, float]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--data", args.data, "--out", str(json_path)]
    if args.quick:
        cmd += ["--quick"]
    elif name == "pipeline":
        cmd += ["--budget-seconds", str(args.pipeline_budget)]
    elif name == "memory":
        cmd += ["--budget-seconds", str(round(max(left, 0.0)))]
    common.log(f"== {name}: {' '.join(cmd[1:])}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not json_path.is_file():
        tail = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith(("I0000", "W0000")))
        return None, f"exit code {proc.returncode}: {tail[-1500:]}", seconds
    return json.loads(json_path.read_text()), None, seconds


def main(argv=None) -> None:
    common.quiet_tensorflow()
    args = parse(argv)
    common.check_data(args.data)
    out = Path(args.out) if args.out else HERE / ("results-quick.md" if args.quick else "results.md")
    started, results, errors, seconds = time.perf_counter(), {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in args.sections.split(","):
            left = args.total_budget - (time.perf_counter() - started)
            results[name], errors[name], seconds[name] = run_section(name, args, Path(tmp) / f"{name}.json",
                                                                     left)
            if errors[name]:
                common.log(f"{name} FAILED: {errors[name].splitlines()[-1] if errors[name] else ''}")
    total = time.perf_counter() - started
    text = report(args, results, errors, seconds, total)
    out.write_text(text)
    raw = {"results": results, "errors": errors, "seconds": seconds, "total_seconds": round(total, 1)}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    common.log(f"wrote {out} ({total / 60:.1f} minutes in all)")
    if total > 15 * 60 and not args.quick:
        common.log("warning: over the 15-minute budget; lower --pipeline-budget or --total-budget")


# ------------------------------------------------------------------------------------------------ results.md


def _range(s: dict, unit: str = "", digits: int = 1) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f}, n={s['n']})"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(args, results: dict, errors: dict, seconds: dict, total: float) -> str:
    m = next((r["machine"] for r in results.values() if r), None) or {}
    lines = [
        "# Benchmark results", "",
        f"- when: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; command: "
        f"`python benchmarks/run_all.py{' --quick' if args.quick else ''} --data {common.shown_path(args.data)}`; "
        f"{total / 60:.1f} minutes in all",
        f"- machine: {m.get('cores')} cores ({m.get('usable_cores')} usable), {m.get('cpu_model')}, "
        f"{m.get('memory_gib')} GiB RAM, GPUs: {', '.join(m.get('gpus') or []) or 'none'}; "
        f"load average at the start {m.get('load_average')}",
        f"- software: TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, NumPy {m.get('numpy')}, "
        f"Python {m.get('python')}, {m.get('platform')}",
        "- every figure: the median of several repeats, with (min-max, n = repeats)",
    ]
    if args.quick:
        lines += ["", "> **QUICK MODE**: a smoke test of the scripts on tiny settings. These numbers are not "
                  "the benchmark; run `make bench` for that."]
    lines += pipeline_section(results.get("pipeline"), errors.get("pipeline"), seconds.get("pipeline"))
    lines += inference_section(results.get("inference"), errors.get("inference"), seconds.get("inference"))
    lines += memory_section(results.get("memory"), errors.get("memory"), seconds.get("memory"))
    lines += gpu_section()
    lines += ablation_section()
    return "\n".join(lines) + "\n"


def _failed(name: str, error: str | None) -> list[str]:
    if error is None:
        return ["", "Not run (not in --sections)."]
    return ["", f"**{name} failed**:", "", "```", error.strip(), "```"]


def pipeline_section(r: dict | None, error: str | None, secs: float | None) -> list[str]:
    lines = ["", "## Input pipeline efficiency", ""]
    if not r:
        return lines + _failed("pipeline", error)[1:]
    lines += [
        "Real `train` input pipeline (`make_dataset`: shuffle, uint8 -> float32, augmentation, prefetch) "
        f"over `{common.shown_path(r['data'])}` ({r['images']} images decoded once at {r['image_size']} px, "
        f"{'grayscale' if r.get('channels') == 1 else 'RGB'}, in "
        f"{r['decode_seconds']} s; {r['train_images']} in the training part) against the same compiled "
        "model fitting float32 tensors already in memory, in the same process, after a warm-up epoch. "
        f"Target: ratio >= {TARGET_RATIO:.2f}. ImageNet architectures are built with `weights: none` "
        "(throughput does not depend on the weights).",
        "", "| architecture | params | batch | steps/epoch | real pipeline img/s | in-memory img/s | ratio "
        "| target | pipeline alone img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in r["results"]:
        lines.append(f"| {a['arch']} | {a['params'] / 1e6:.2f}M | {a['batch_size']} | {a['steps_per_epoch']} "
                     f"| {_range(a['real_images_per_second'])} | {_range(a['memory_images_per_second'])} "
                     f"| {a['ratio']:.3f} | {_met(a['ratio'] >= TARGET_RATIO)} "
                     f"| {a['pipeline_alone_images_per_second']:.0f} |")
    low = [a["arch"] for a in r["results"] if a["ratio"] < TARGET_RATIO]
    per_repeat = "; ".join(f"{a['arch']} {a['ratio_per_repeat']}" for a in r["results"])
    lines += ["", f"Ratio per repeat: {per_repeat}"]
    if low:
        lines += ["", f"Below target: {', '.join(low)}. On a CPU the pipeline's augmentation runs on the "
                  "same cores as the model, so its cost shows directly in the ratio; the 'pipeline alone' "
                  "column is how fast the pipeline produces batches when nothing else runs. Compare it with "
                  "the in-memory figure: if it is not several times higher, the pipeline is the bottleneck."]
    lines += ["", f"Section time: {secs:.0f} s."]
    return lines


def inference_section(r: dict | None, error: str | None, secs: float | None) -> list[str]:
    lines = ["", "## Inference", ""]
    if not r:
        return lines + _failed("inference", error)[1:]
    gate = {True: "gate on", False: "no gate"}.get(r.get("gate"), "gate not recorded")
    lines += [f"{r['arch']} at {r['input_shape']}, {gate} (run `{r['run']}`); each figure the median of "
              f"{r['repeats']} blocks, each the median of {r['calls']} calls taken in turns by the paths.", "",
              "| path | latency ms | x raw call | target |", "|---|---|---|---|"]
    for name, s in r["latency_ms"].items():
        ratio = r["ratio_to_raw"].get(name)
        target = _met(ratio <= TARGET_SERVE) if ratio is not None and name.startswith("serving path") else ""
        lines.append(f"| {name} | {_range(s, digits=2)} | {f'{ratio:.2f}' if ratio is not None else ''} "
                     f"| {target} |")
    lines += ["", f"Batched throughput (raw compiled call, batch {r['batch']}): "
              f"**{r['batched_images_per_second']} images/s**, against {r['single_image_images_per_second']} "
              f"images/s one at a time. Target: serving path <= {TARGET_SERVE}x the raw call."]
    if r.get("serving_missing"):
        lines += ["", f"Serving path not timed: {r['serving_missing']} (hook: `serving_paths()` in "
                  "benchmarks/inference.py)."]
    lines += ["", f"Section time: {secs:.0f} s."]
    return lines


def memory_section(r: dict | None, error: str | None, secs: float | None) -> list[str]:
    lines = ["", "## Memory", ""]
    if not r:
        return lines + _failed("memory", error)[1:]
    first = r["runs"][0]
    how = "the whole epoch" if r["full_epoch"] else f"training stopped after {r['steps']} steps of the epoch"
    peak = r["peak_rss_gib"]
    ok = _met(peak["median"] < TARGET_RSS_GIB)
    lines += ["Peak RSS (kernel `ru_maxrss` of a fresh child process) of the real `train` path with the "
              f"default CustomNet config on `{common.shown_path(r['data'])}`: {first['images']} images at "
              f"{first['image_size']} px "
              f"(uint8 cache {first['uint8_cache_mib']} MiB; float32 would be {first['float32_cache_mib']} "
              f"MiB), batch {first['batch_size']}, {how}, then validation, checkpoint, prediction and "
              "reports.", "", "| peak RSS GiB | target | seconds per run |", "|---|---|---|",
              f"| {_range(peak, digits=2)} | < {TARGET_RSS_GIB:.0f} GiB: {ok} "
              f"| {', '.join(str(x['seconds']) for x in r['runs'])} |", "", f"Section time: {secs:.0f} s."]
    return lines


def gpu_section() -> list[str]:
    log = HERE / "gpu_check_output.txt"
    lines = ["", "## GPU check (`benchmarks/gpu_check.sh`)", ""]
    if log.is_file():
        return lines + ["Output of the last run (copied from benchmarks/gpu_check_output.txt):", "", "```",
                        log.read_text().strip(), "```"]
    return lines + ["Not run: no GPU machine was available when these results were made. Run "
                    "`bash benchmarks/gpu_check.sh [DATA_DIR]` on one (it writes "
                    "benchmarks/gpu_check_output.txt, which the next `make bench` includes here)."]


def ablation_section() -> list[str]:
    """The CustomNet recipe ablation (issue 8) is hours of training, not part of make bench: its write-up,
    benchmarks/ablation.md (table from `python benchmarks/ablation.py --table`), is carried into every results.md."""
    path = HERE / "ablation.md"
    return ["", path.read_text().strip()] if path.is_file() else []


if __name__ == "__main__":
    main()
