"""Candidate out-of-distribution scores on one trained run, compared on the gate's development sets (ood.md).

    python benchmarks/gate_sets.py SETS --run RUN          # the brain MRI that must be accepted
    python benchmarks/ood_candidates.py RUN SETS [--out benchmarks/ood_candidates.jsonl]

One forward pass per image gives the probabilities, the logits (the input of the last Dense layer times its kernel),
and the pooled output of each block's end. Every score is fitted on the run's training images (split.csv), its
threshold chosen on half of the validation images of *every* training source (each source must keep ``acceptance``
of its half: the threshold is the largest per-source quantile; rows ``/pooled`` pool the sources, rows
``/source_class`` ask it of every class of every source), and it is judged on the other half, on each set
of gate_sets.py and on each category of the package-built non-brain set (braintumor.nonbrain). Scores:
- ``msp``: 1 - the top softmax probability (the baseline);
- ``energy``: -logsumexp(logits) (Liu et al. 2020);
- ``maha_class``: today's gate: Mahalanobis to the nearest class mean, last block, shared Ledoit-Wolf covariance;
- ``maha_source``: the same with one mean per (class, source);
- ``knn{k}``: the k-th smallest cosine distance to the training images' L2-normalised last-block features
  (Sun et al. 2022);
- ``maha_layers``: ``maha_class`` on every block's pooled end, each over its threshold, summed (Lee et al. 2018
  combine layers; with no OOD data to fit their weights, each layer counts the same);
- ``maha_layers_34``: the same on the last two blocks only;
- ``knn_layers``: ``knn10`` on the concatenated L2-normalised block ends;
- ``oe_head``: outlier exposure on features (Hendrycks et al. 2019, as a small separate head): a logistic
  regression "brain MRI or not" on the standardised block ends, the training images against the far non-brain
  categories (photographs, synthetic, other medical images); CT and body MRI stay unseen, so its figures on them
  say how it generalises to near misses it was not shown;
- ``oe_shift``: the head that ships (``eval.gate_head: oe``, braintumor/gate_head.py), read from the run's gate as
  train (or benchmarks/refit_gate.py) fitted it: the training images and shifted copies of them (shifts.py) against
  synthetic negatives only (nonbrain.negatives: drawn CT heads, body sections, noise, text), on the gate's pooled
  columns; every real set here is unseen by it (``nonbrain_synthetic`` is of the kinds it was fitted on);
- ``maha+oe``: the gate as it ships with the head: a scan is refused when either says so, ranked by
  max(distance / its threshold, exp(head logit - its threshold)) (both thresholds the stored gate's, chosen on
  the validation images).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import quiet_tensorflow, shown_path  # noqa: E402

quiet_tensorflow()

import keras  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from braintumor.data import find_images, map_images  # noqa: E402
from braintumor.engine import scorer  # noqa: E402
from braintumor.models.loading import load_run  # noqa: E402
from braintumor.nonbrain import NEAR, build  # noqa: E402
from braintumor.ood import fit_features, mahalanobis  # noqa: E402


def probe(model) -> keras.Model:
    """[probabilities, penultimate, pooled block ends (what each block's pool takes)...] in one pass."""
    pools = [layer for layer in model.layers if layer.name.startswith("block") and layer.name.endswith("_pool")]
    pooled = [keras.layers.GlobalAveragePooling2D()(p.input) for p in pools]
    return keras.Model(model.inputs, [model.outputs[0], model.get_layer("predictions").input, *pooled])


def decode(run, paths: list[str]) -> dict[str, np.ndarray]:
    """The images as every command reads them (uint8 at the run's size) and their input-check figures."""
    read = map_images(paths, run.spec.read)
    keep = [i for i, r in enumerate(read) if not isinstance(r, str)]
    return {"images": np.stack([read[i][0] for i in keep]), "keep": np.array(keep),
            "stats": np.array([[read[i][1].colourfulness, read[i][1].spread] for i in keep])}


def forward(run, decoded: dict, batch: int = 64) -> dict[str, np.ndarray]:
    images = decoded["images"]
    net = probe(run.model)
    w, b = (np.asarray(v, np.float64) for v in run.model.get_layer("predictions").get_weights())
    outs = [net.predict_on_batch(images[i:i + batch].astype(np.float32)) for i in range(0, len(images), batch)]
    cols = [np.concatenate([np.asarray(o[j], np.float64) for o in outs]) for j in range(len(outs[0]))]
    gate = run.classifier.gates[0] if run.classifier.has_gate else None
    shipped = {} if gate is None or gate.head is None else {
        "gate": scorer.score(run.classifier.model, images, batch)[1][0]}  # the columns the shipped gate reads
    return {"probs": cols[0], "logits": cols[1] @ w + b, "layers": cols[2:], "stats": decoded["stats"], **shipped,
            **{k: v for k, v in decoded.items() if k not in ("images", "stats")}}


def decode_all(run_dir: str, sets_dir: str) -> dict[str, dict]:
    """Every set decoded once: the training and validation images (with labels and sources), each folder of
    gate_sets.py and each category of the non-brain set."""
    run = load_run(run_dir, with_model=False)
    split = pd.read_csv(Path(run_dir) / "split.csv")
    if "source" not in split:
        split["source"] = "kaggle"
    out = {}
    for side in ("train", "val"):
        part = split[split["split"] == side].reset_index(drop=True)
        got = decode(run, part["path"].tolist())
        got["labels"] = part["label"].to_numpy()[got["keep"]]
        got["sources"] = part["source"].to_numpy()[got["keep"]]
        out[side] = got
    for d in sorted(p for p in Path(sets_dir).iterdir() if p.is_dir()):
        out[d.name] = decode(run, find_images([d]))
    with tempfile.TemporaryDirectory() as tmp:
        build(tmp)
        paths = find_images([tmp])
        cats = np.array([Path(p).parent.name for p in paths])
        got = decode(run, paths)
        for c in sorted(set(cats)):
            mask = cats[got["keep"]] == c
            out[f"nonbrain_{c}"] = {k: v[mask] for k, v in got.items() if k != "keep"}
    return out


def gather(run_dir: str, decoded: dict[str, dict]) -> dict[str, dict]:
    run = load_run(run_dir)
    return {k: forward(run, v) for k, v in decoded.items()}


def l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(train: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """(n,) the k-th smallest cosine distance of each row of x to the (normalised) training rows."""
    sims = l2(x) @ l2(train).T
    return 1.0 - np.sort(sims, axis=1)[:, -k]


def scorers(train: dict, negatives: np.ndarray, gate=None) -> dict:
    """name -> function(set dict) -> (n,) score, larger = less like the training scans. ``negatives``: the
    concatenated block ends of the far non-brain categories (the outlier-exposure head's negatives)."""
    y, src = train["labels"], train["sources"]
    last = train["layers"][-1]
    fitted = [fit_features(f, y, int(y.max()) + 1) for f in train["layers"]]
    groups = {g: i for i, g in enumerate(sorted({(a, b) for a, b in zip(y, src)}))}
    gy = np.array([groups[(a, b)] for a, b in zip(y, src)])
    src_means, src_prec = fit_features(last, gy, len(groups))
    cat = np.concatenate([l2(f) for f in train["layers"]], axis=1)
    out = {
        "msp": lambda s: 1 - s["probs"].max(axis=1),
        "energy": lambda s: -logsumexp(s["logits"], axis=1),
        "maha_class": lambda s: mahalanobis(s["layers"][-1], *fitted[-1]),
        "maha_source": lambda s: mahalanobis(s["layers"][-1], src_means, src_prec),
        "knn_layers": lambda s: knn_distance(cat, np.concatenate([l2(f) for f in s["layers"]], axis=1), 10),
    }
    for k in (1, 10, 50):
        out[f"knn{k}"] = lambda s, k=k: knn_distance(last, s["layers"][-1], k)
    scale = [np.quantile(mahalanobis(train["layers"][i], *fitted[i]), 0.98) for i in range(len(fitted))]
    out["maha_layers"] = lambda s: sum(mahalanobis(f, *fitted[i]) / scale[i] for i, f in enumerate(s["layers"]))
    out["maha_layers_34"] = lambda s: sum(mahalanobis(s["layers"][i], *fitted[i]) / scale[i]
                                          for i in range(len(fitted))[-2:])
    # outlier exposure on features: a logistic "brain MRI or not" head, negatives from the far categories only
    # (photos, synthetic, other medical), so CT and body MRI stay unseen
    pos = np.concatenate(train["layers"], axis=1)
    std = StandardScaler().fit(pos)
    head = LogisticRegression(C=0.01, max_iter=3000, class_weight="balanced").fit(
        std.transform(np.r_[pos, negatives]), np.r_[np.zeros(len(pos)), np.ones(len(negatives))])
    out["oe_head"] = lambda s: head.decision_function(std.transform(np.concatenate(s["layers"], axis=1)))
    if gate is not None and gate.head is not None:  # the head that ships, as the run stores it
        out["oe_shift"] = lambda s: gate.head.logit(s["gate"])
        out["maha+oe"] = lambda s: np.maximum(gate.ratio(s["gate"]),
                                              np.exp(np.minimum(gate.head_margin(s["gate"]), 50.0)))
    return out


def per_source_threshold(score: np.ndarray, sources: np.ndarray, acceptance: float) -> float:
    """The smallest threshold under which every source keeps ``acceptance`` of its images."""
    return float(max(np.quantile(score[sources == s], acceptance) for s in np.unique(sources)))


def take(s: dict, idx: np.ndarray) -> dict:
    return {k: ([a[idx] for a in v] if k == "layers" else v[idx]) for k, v in s.items()}


def evaluate(data: dict, acceptance: float = 0.98, seed: int = 0, gate=None) -> list[dict]:
    train, val = data["train"], data["val"]
    halves = np.random.default_rng(seed).permutation(len(val["labels"])) % 2
    sets = [k for k in data if k not in ("train", "val")]
    near = np.concatenate([np.full(len(data[f"nonbrain_{c}"]["probs"]), 1) for c in NEAR])
    rows = []
    far = [k for k in sets if k.startswith("nonbrain_") and k[len("nonbrain_"):] not in NEAR]
    negatives = np.concatenate([np.concatenate(data[k]["layers"], axis=1) for k in far])
    for name, fn in scorers(train, negatives, gate).items():
        scores = {k: fn(data[k]) for k in sets}
        v = fn(val)
        near_scores = np.concatenate([scores[f"nonbrain_{c}"] for c in NEAR])
        all_nb = np.concatenate([scores[k] for k in sets if k.startswith("nonbrain_")])
        for h, rule in ((0, "source"), (1, "source"), (0, "pooled"), (1, "pooled"), (0, "source_class"),
                        (1, "source_class")):
            a, b = np.flatnonzero(halves == h), np.flatnonzero(halves != h)
            group = {"source": val["sources"], "pooled": np.zeros(len(v), int),
                     "source_class": np.char.add(val["sources"].astype(str), val["labels"].astype(str))}[rule]
            t = per_source_threshold(v[a], group[a], acceptance)
            row = {"score": name if rule == "source" else f"{name}/{rule}", "half": h, "threshold": t}
            for src in np.unique(val["sources"]):
                sb = v[b][val["sources"][b] == src]
                row[f"refused:{src}_val"] = float(np.mean(sb > t))
                row[f"auroc_near:{src}_val"] = float(roc_auc_score(np.r_[np.zeros(len(sb)), near],
                                                                   np.r_[sb, near_scores]))
            for k in sets:
                row[f"refused:{k}"] = float(np.mean(scores[k] > t))
                if not k.startswith("nonbrain_"):
                    row[f"auroc_near:{k}"] = float(roc_auc_score(np.r_[np.zeros(len(scores[k])), near],
                                                                 np.r_[scores[k], near_scores]))
                    row[f"auroc_all:{k}"] = float(roc_auc_score(np.r_[np.zeros(len(scores[k])),
                                                                      np.ones(len(all_nb))],
                                                                np.r_[scores[k], all_nb]))
            rows.append(row)
    return rows


SHOWN = ("msp", "energy", "maha_class", "maha_source", "maha_layers", "maha_layers_34", "knn10", "knn50",
         "knn_layers", "oe_head", "oe_shift", "maha+oe", "maha_class/pooled", "maha_class/source_class")


def tables(rows: list[dict]) -> str:
    """Markdown: refused % per set and AUROC against the near misses per accepted set, both halves averaged."""
    df = pd.DataFrame(rows).groupby("score").mean(numeric_only=True)
    df = df.loc[[s for s in SHOWN if s in df.index]]
    out = []
    for prefix, title, fmt in (("refused:", "refused, % (threshold: each training source keeps 98% of its "
                                            "held-out half)", "{:.1f}"),
                               ("auroc_near:", "AUROC, CT and body MRI against each set that must be accepted",
                                "{:.3f}")):
        cols = [c for c in df.columns if c.startswith(prefix)]
        out += [f"**{title}**", "", "| set | " + " | ".join(df.index) + " |",
                "|---|" + "---|" * len(df.index)]
        for c in cols:
            scale = 100 if prefix == "refused:" else 1
            out.append(f"| {c[len(prefix):]} | " + " | ".join(fmt.format(scale * df.loc[s, c]) for s in df.index)
                       + " |")
        out.append("")
    return "\n".join(out)


def shipped(run_dir: str, data: dict) -> str:
    """Markdown: the verdicts the run itself gives each set (its stored gate and temperature, the input checks):
    out_of_distribution by the head, by the distance or an input check, and uncertain, as predict would say."""
    from braintumor.input_checks import InputStats

    classifier = load_run(run_dir).classifier
    out = ["**the run's own verdicts (stored thresholds, chosen on all validation images), %**", "",
           "| set | n | refused | out_of_distribution: head | ... : distance or input check | uncertain "
           "| without the head: out_of_distribution |", "|---|---|---|---|---|---|---|"]
    for k, s in data.items():
        if k == "train" or "gate" not in s:
            continue
        stats = [InputStats(float(c), float(sp)) for c, sp in s["stats"]]
        v = classifier.from_raw(s["probs"], [s["gate"]], stats)
        st = np.array([x.status for x in v])
        head = np.array(["brain-MRI-or-not head" in x.reason for x in v])
        ood = st == "out_of_distribution"
        alone = (np.array([x.ratio for x in v]) > 1.0) | np.array(["colour" in x.reason or "uniform" in x.reason
                                                                    for x in v])
        out.append(f"| {'val (all)' if k == 'val' else k} | {len(v)} | {100 * np.mean(st != 'ok'):.1f} | "
                   f"{100 * np.mean(ood & head):.1f} | {100 * np.mean(ood & ~head):.1f} | "
                   f"{100 * np.mean(st == 'uncertain'):.1f} | {100 * np.mean(alone):.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("sets", help="folder written by benchmarks/gate_sets.py")
    parser.add_argument("--acceptance", type=float, default=0.98)
    parser.add_argument("--cache", type=Path, default=None, help="pickle of the decoded images, reused")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ood_candidates.jsonl"))
    args = parser.parse_args()
    import pickle

    if args.cache and args.cache.is_file():
        decoded = pickle.loads(args.cache.read_bytes())
    else:
        decoded = decode_all(args.run, args.sets)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(decoded))
    data = gather(args.run, decoded)
    gates = load_run(args.run).classifier.gates
    rows = evaluate(data, args.acceptance, gate=gates[0] if gates else None)
    with args.out.open("w") as f:
        for r in rows:
            f.write(json.dumps({"run": shown_path(args.run), **r}) + "\n")
    print(f"{len(rows)} rows in {args.out}")
    print(tables(rows))
    if gates and gates[0].head is not None:
        print(shipped(args.run, data))


if __name__ == "__main__":
    main()
