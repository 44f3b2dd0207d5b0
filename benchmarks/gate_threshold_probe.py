"""The gate's distance threshold chosen on brain MRI in more than one preparation (issue 21 item 3), probed.

    python benchmarks/gate_threshold_probe.py RUN CACHE      # CACHE: ood_candidates.py's --cache pickle

The stored threshold keeps 98-99% of each training source's validation scans. Here it is raised until it also keeps
80 / 90 / 95% of every kind of shifted validation scan (the gate head's positive shifts, gate_fit.POSITIVE_SHIFTS,
300 draws each): would brain MRI of other preparations and collections be refused less, and what would it let
through? Prints each set's refused % (out_of_distribution % in brackets) under each threshold, the run's own
verdicts (stored temperature, head and input checks unchanged). Results: benchmarks/ood.md.
"""
import copy
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow  # noqa: E402

quiet_tensorflow()
from braintumor.engine import scorer  # noqa: E402
from braintumor.engine.gate_fit import POSITIVE_SHIFTS  # noqa: E402
from braintumor.input_checks import InputStats  # noqa: E402
from braintumor.models.loading import load_run  # noqa: E402
from braintumor.shifts import SHIFTS  # noqa: E402

run_dir, cache = sys.argv[1], sys.argv[2]
decoded = pickle.loads(Path(cache).read_bytes())
run = load_run(run_dir)
clf = run.classifier
gate = clf.gates[0]
feats = {}
for k, v in decoded.items():
    if k == "train":
        continue
    probs, g = scorer.score(clf.model, v["images"], 64)[:2]
    feats[k] = (probs, g[0], v["stats"])
rng = np.random.default_rng(0)
val = decoded["val"]["images"]
per = 300
kinds = []
for steps in POSITIVE_SHIFTS:
    x = val[rng.choice(len(val), size=min(per, len(val)), replace=False)]
    for name, sev in steps:
        x = SHIFTS[name].apply(x, sev, seed=int(rng.integers(1 << 31)))
    probs, g = scorer.score(clf.model, x, 64)[:2]
    kinds.append(gate.distance(g[0]))
t0 = gate.threshold
print("stored threshold", t0, "each shift's distance quantiles 0.9 / 0.95, over the threshold:",
      [(round(float(np.quantile(d, .9)) / t0, 2), round(float(np.quantile(d, .95)) / t0, 2)) for d in kinds])
variants = {"stored": t0}
for q in (0.80, 0.90, 0.95):
    variants[f"shifted keep {q:.2f}"] = max(t0, max(float(np.quantile(d, q)) for d in kinds))
print("| set | " + " | ".join(variants) + " |")
print("|---|" + "---|" * len(variants))
for k, (probs, g, stats) in feats.items():
    cells = []
    for t in variants.values():
        gg = copy.deepcopy(gate)
        gg.threshold = gg.far = t
        c2 = copy.copy(clf)
        c2.gates = [gg]
        st = [InputStats(float(a), float(b)) for a, b in stats]
        v = c2.from_raw(probs, [g], st)
        s = np.array([x.status for x in v])
        cells.append(f"{100*np.mean(s!='ok'):.1f} ({100*np.mean(s=='out_of_distribution'):.1f})")
    print(f"| {k} | " + " | ".join(cells) + " |")
