"""Disk size of each install: the slim ONNX server (`braintumor[serve,onnx]`) against the TensorFlow one
(`braintumor[train,serve]`), from the distributions installed here (issue 15: at least 5x smaller).

Reads braintumor's own requirements from pyproject.toml (not the installed metadata, which may be another
checkout's), walks each dependency's closure through importlib.metadata (markers evaluated for this interpreter)
and adds up the files each distribution's RECORD lists. Needs every package of both installs present (make install).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

INSTALLS = {"onnx server: braintumor[serve,onnx]": ["serve", "onnx"],
            "keras server: braintumor[train,serve]": ["train", "serve"]}


def closure(name: str, extras: list[str], seen: dict[str, int]) -> None:
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return
    dist = md.distribution(name)
    seen[key] = sum(os.path.getsize(dist.locate_file(f)) for f in dist.files or []
                    if os.path.isfile(dist.locate_file(f)))
    for line in dist.requires or []:
        req = Requirement(line)
        env = {"extra": ""}
        wanted = req.marker is None or req.marker.evaluate(env) or any(
            req.marker.evaluate({"extra": e}) for e in extras)
        if wanted:
            try:
                closure(req.name, list(req.extras), seen)
            except md.PackageNotFoundError:
                print(f"  {req.name} is not installed: its size is missing", file=sys.stderr)


def main() -> dict:
    out = {}
    for label, extras in INSTALLS.items():
        project = tomllib.loads(PYPROJECT.read_text())["project"]
        seen: dict[str, int] = {}
        for line in project["dependencies"] + [r for e in extras for r in project["optional-dependencies"][e]]:
            req = Requirement(line)
            closure(req.name, list(req.extras), seen)
        out[label] = {"mib": sum(seen.values()) / 2**20, "packages": len(seen),
                      "largest": sorted(((round(v / 2**20, 1), k) for k, v in seen.items()), reverse=True)[:5]}
        print(f"{label}: {out[label]['mib']:.0f} MiB in {len(seen)} distributions; largest {out[label]['largest']}")
    slim, full = (v["mib"] for v in out.values())
    print(f"the TensorFlow install is {full / slim:.1f}x the ONNX one (target >= 5x)")
    return {"installs": out, "ratio": full / slim}


if __name__ == "__main__":
    json.dump(main(), sys.stdout if "--json" in sys.argv else open(os.devnull, "w"), indent=2)
