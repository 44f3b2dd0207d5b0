"""A small control-vs-levers check of the shift levers with `braintumor stress` (issue 20 items 4-5), sized for the
shared 2-core machine: CustomNet's shipped recipe trained on N Kaggle training slices per class, once as shipped
(control) and once with the levers of configs/recipes/customnet-external.yaml (no guidance, one collection, so no
balance), then each stressed on Kaggle slices neither saw and on the TCGA-LGG development slices (FLAIR and
post-contrast T1, never trained on). Writes benchmarks/stress_levers.md; the run directories stay under --runs-dir.

    nice -n 10 python benchmarks/stress_levers.py --per-class 300 --test-per-class 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path("/work/shared/data")
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
LEVERS = ["data.augment.remap=0.5", "data.augment.invert=0.5", "data.augment.bias_field=0.3",
          "data.augment.noise=0.03", "data.augment.skull_strip=0.25", "data.augment.skull_strip_margin=0.05"]


def cli(*args: str) -> None:
    code = "import sys; from braintumor.cli import main; sys.argv = ['braintumor', *sys.argv[1:]]; main()"
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def split_kaggle(root: Path, per_class: int, test_per_class: int) -> tuple[Path, Path]:
    """Symlinked folders: the first ``per_class`` files of each class (sorted) to train on, the next
    ``test_per_class`` to test on."""
    train, test = root / "train", root / "test"
    for c in CLASSES:
        files = sorted((DATA / "brain-tumor-mri/Training" / c).iterdir())
        for part, chosen in ((train, files[:per_class]), (test, files[per_class:per_class + test_per_class])):
            (part / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (part / c / f.name).symlink_to(f)
    return train, test


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--runs-dir", default=os.path.join(tempfile.gettempdir(), "stress_levers_runs"))
    args = p.parse_args()
    runs = Path(args.runs_dir)
    train, test = split_kaggle(Path(tempfile.mkdtemp()), args.per_class, args.test_per_class)
    lgg = [f"lgg_flair={DATA / 'tcga-lgg-dev/flair'}", f"lgg_t1ce={DATA / 'tcga-lgg-dev/t1ce'}"]
    results = {}
    for name, sets in (("control", []), ("levers", LEVERS)):
        cli("train", "--arch", "customnet", "--data", str(train), "--epochs", str(args.epochs), "--runs-dir",
            str(runs), "--name", name, *[x for s in sets for x in ("--set", s)])
        run = max((runs / "train").glob(f"*-{name}"), key=lambda d: d.stat().st_mtime)
        for where, data in (("kaggle", [str(test)]), ("lgg", lgg)):
            cli("stress", str(run), *[x for d in data for x in ("--data", d)], "--runs-dir", str(runs), "--name",
                f"{name}-{where}", "--per-class", str(args.test_per_class))
            out = max((runs / "stress").glob(f"*-{name}-{where}"), key=lambda d: d.stat().st_mtime)
            results[(name, where)] = json.loads((out / "stress.json").read_text())
    write_md(results, args)


def write_md(results: dict, args) -> None:
    lines = ["# Shift levers against a control, under `braintumor stress` (small)", "",
             f"`nice -n 10 python benchmarks/stress_levers.py --per-class {args.per_class} --test-per-class "
             f"{args.test_per_class} --epochs {args.epochs}`: CustomNet's shipped recipe on {args.per_class} Kaggle "
             "training slices per class, as shipped (control) and with the shift levers of customnet-external "
             "(remap 0.5, invert 0.5, bias_field 0.3, noise 0.03, skull_strip 0.25; no guidance, no balance). "
             "Stressed on Kaggle slices neither run saw and on the LGG development slices (FLAIR and post-contrast "
             "T1; glioma and notumor only, so accuracy there counts glioma named right).", ""]
    for where in ("kaggle", "lgg"):
        lines += [f"## {where}", "", "| shift | severity | level | control acc / sens / spec / refused | "
                  "levers acc / sens / spec / refused |", "|---|---|---|---|---|"]
        c, lv = results[("control", where)], results[("levers", where)]
        rows = [("unchanged", 0, "", c["unchanged"], lv["unchanged"])]
        for key in c["shifts"]:
            for rc, rl in zip(c["shifts"][key]["rows"][1:], lv["shifts"][key]["rows"][1:]):
                rows.append((key, rc["severity"], rc["level"], rc, rl))
        for key, sev, level, rc, rl in rows:
            lines.append(f"| {key} | {sev} | {level} | {_four(rc)} | {_four(rl)} |")
        lines.append("")
    Path(__file__).with_name("stress_levers.md").write_text("\n".join(lines) + "\n")


def _four(r: dict) -> str:
    return " / ".join("-" if r[m] is None else f"{r[m]:.2f}" for m in ("accuracy", "sensitivity", "specificity",
                                                                         "refused"))


if __name__ == "__main__":
    main()
