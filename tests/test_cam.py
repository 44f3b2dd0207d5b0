"""Grad-CAM: correct on a task where a bright blob decides the class, every architecture, nested backbones,
and the `cam` command's files and errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from braintumor.cli import app
from braintumor.config import ModelConfig
from braintumor.errors import ConfigError, ModelError
from braintumor.explain import gradcam, graph, render
from braintumor.models import available, build_model, get_spec
from braintumor.models.loading import load_run
from braintumor.serve.keras_backend import KerasBackend
from tests.conftest import assert_png_figure

runner = CliRunner()
SIZE = 32
CLASSES = ("blob", "plain")


def blob_or_plain(blob: bool, rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE) uint8 gray noise; with a bright square anywhere when ``blob``: the square IS the evidence.

    (In the quadrant task of conftest.py the class is the blob's *position*, which a GAP network reads from
    the zero-padded borders and from the empty quadrants, so its maps rightly do not sit on the blob.)
    """
    img = (rng.random((SIZE, SIZE)) * 70).astype(np.uint8)
    if blob:
        side = SIZE // 4
        y0, x0 = rng.integers(0, SIZE - side, 2)
        img[y0:y0 + side, x0:x0 + side] = 200 + int(rng.integers(0, 55))
    return img


def write_blob_data(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(blob_or_plain(label == 0, rng)).save(root / name / f"img_{i:03d}.png")
    return root


TRAIN = ["--arch", "customnet", "--epochs", "6", "--image-size", str(SIZE), "--batch-size", "4",
         "--set", "model.filters=[8,16]", "--set", "model.dense_units=[16]", "--set", "train.lr=0.003",
         "--set", "train.early_stopping_patience=10", "--set", "eval.bootstrap=0",
         "--set", "data.classes=[blob,plain]", "--set", "data.color_mode=rgb",
         "--set", "data.crop=none", "--set", "data.normalize=none"]  # noise images have no head to crop to


@pytest.fixture(scope="module")
def blob_run(tmp_path_factory) -> Path:
    """A customnet trained once on blob-vs-plain images (seconds); its runs/ folder holds one train run."""
    root = tmp_path_factory.mktemp("cam")
    data = write_blob_data(root / "data", per_class=150, seed=0)
    res = runner.invoke(app, ["train", "--data", str(data), "--runs-dir", str(root / "runs"), *TRAIN])
    assert res.exit_code == 0, res.output
    (run_dir,) = (root / "runs" / "train").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def model(blob_run):
    from braintumor.models.loading import load_run

    return load_run(blob_run).model


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    """The same recipe trained from another seed, in its own runs folder (blob_run's stays a single run)."""
    from braintumor.models.loading import load_run

    root = tmp_path_factory.mktemp("cam_seed7")
    data = write_blob_data(root / "data", per_class=150, seed=0)
    res = runner.invoke(app, ["train", "--data", str(data), "--runs-dir", str(root / "runs"), *TRAIN, "--seed", "7"])
    assert res.exit_code == 0, res.output
    (run_dir,) = (root / "runs" / "train").iterdir()
    return load_run(run_dir).model


@pytest.fixture
def held_out(tmp_path) -> Path:
    """Blob images the model never saw, as files, plus a broken one."""
    return write_blob_data(tmp_path / "new", per_class=3, seed=99)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


# --- correctness --------------------------------------------------------------------------------------------


def held_out_blobs(n: int = 30) -> list[np.ndarray]:
    """Blob images the model never saw (the training set uses seed 0)."""
    rng = np.random.default_rng(12345)
    return [blob_or_plain(True, rng) for _ in range(n)]


def mass_share(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the heatmap's mass inside ``region`` (energy-based pointing game); 0 for an all-zero map."""
    total = float(heatmap.sum())
    return float(heatmap[region].sum()) / total if total > 0 else 0.0


@pytest.mark.parametrize("method", gradcam.METHODS)
def test_heatmap_mass_lies_on_the_blob(model, second_model, method):
    """The blob is 1/16 of the image; pooled over two trained models, the maps put well over that share on it.

    Why not "the peak is on the blob in every image of one model": which model a seed gives depends on the CPU
    (CPU training is not bit-reproducible; CI's seed-42 model failed that where ours passed), and Grad-CAM is
    not faithful on every model. Measured on the 2-core box (benchmarks/cam_localisation.py; about 90 trainings
    of this recipe and of a ReLU and a plateau-schedule variant): the peak sat a cell off the blob, on its edge,
    in about 1 model in 4; the mass share fell to chance (0.02-0.05) for one method in 3 of the 90 models and
    was 0.12-0.6 otherwise. Both models at chance is then about 1 run in 1,000, while a map that ignores the
    image, or is mirrored or transposed, scores near chance on both (transposed maps are scored as a control).
    """
    chance = (SIZE // 4) ** 2 / SIZE ** 2
    shares, swapped = [], []
    for m in (model, second_model):
        right = 0
        for gray in held_out_blobs():
            e = gradcam.explain(m, rgb(gray), method=method)
            right += e.predicted == 0
            blob = gray >= 200
            shares.append(mass_share(e.heatmap, blob))
            swapped.append(mass_share(e.heatmap.T, blob))
        assert right >= 27, f"a model did not learn the task ({right}/30), so the test says nothing"
    share, control = float(np.mean(shares)), float(np.mean(swapped))
    assert share >= 2 * chance, f"{method}: {share:.3f} of the maps' mass on the blob (chance {chance:.3f})"
    assert share >= 2 * control, f"{method}: transposed maps score about as well ({control:.3f} vs {share:.3f})"


def test_gradcam_equals_cam_for_a_linear_head():
    """conv -> GAP -> dense: the class gradient is w_c / (h * w) everywhere, so Grad-CAM is exactly CAM."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    feats = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(feats)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(pooled))
    image = np.random.default_rng(0).random((12, 12, 3)) * 255
    maps = keras.Model(inputs, feats)(image[None].astype("float32"))[0].numpy()
    kernel = model.get_layer("predictions").kernel.numpy()
    for c in range(3):
        expected = np.maximum(maps @ kernel[:, c], 0)
        expected = expected / expected.max() if expected.max() > 0 else expected
        got = gradcam.class_activation_map(model, image, class_index=c)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_explained_class_and_probabilities(model):
    image = rgb(blob_or_plain(True, np.random.default_rng(5)))
    e = gradcam.explain(model, image, class_index=1)
    assert e.class_index == 1 and e.predicted == 0
    np.testing.assert_allclose(e.probs, model.predict(image[None].astype("float32"), verbose=0)[0], atol=1e-5)
    assert e.layer == graph.last_conv_layer(model) == "block2_2_act"  # the map before the last pooling
    with pytest.raises(ConfigError, match="out of range"):
        gradcam.explain(model, image, class_index=2)
    with pytest.raises(ConfigError, match="gradcam, gradcam\\+\\+"):
        gradcam.explain(model, image, method="scorecam")


def test_image_of_another_size_and_channels(model):
    """Any (h, w[, c]) image: resized like data.to_array for the model, heatmap back at the image's size."""
    gray = np.asarray(Image.fromarray(blob_or_plain(True, np.random.default_rng(8))).resize((50, 70)))
    for image in (gray, gray[..., None], rgb(gray).astype(np.float32)):
        heat = gradcam.class_activation_map(model, image)
        assert heat.shape == (70, 50) and heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)


# --- every architecture, and nested backbones ---------------------------------------------------------------


@pytest.mark.parametrize("arch", available())
def test_every_architecture_gives_a_heatmap(arch):
    cfg = ModelConfig(arch=arch, weights="none", filters=(8, 16), dense_units=(16,))
    model = build_model(cfg, 4, (64, 64, 3))
    layer = graph.last_conv_layer(model)
    spec = get_spec(arch)
    assert layer == (spec.last_conv if spec.last_conv != "auto" else "block2_2_act")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for method in gradcam.METHODS:
        heat = gradcam.class_activation_map(model, image, class_index=1, method=method)
        assert heat.shape == (64, 64) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1


def _mobilenet():
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(64, 64, 3),
                                          alpha=0.35)


def test_nested_backbone_matches_the_flat_model(tmp_path):
    """A user's classifier with the backbone as a sub-model (the "Graph disconnected" case) explains like the
    same network built flat, before and after saving, with the automatic layer and a chosen inner layer."""
    keras.utils.set_random_seed(1)
    backbone = _mobilenet()
    pool = keras.layers.GlobalAveragePooling2D()
    dense = keras.layers.Dense(3, activation="softmax")
    inputs = keras.Input((64, 64, 3))
    nested = keras.Model(inputs, dense(pool(backbone(inputs))), name="user_model")
    flat = keras.Model(backbone.inputs, dense(pool(backbone.outputs[0])), name="flat")
    nested.save(tmp_path / "nested.keras")
    loaded = keras.models.load_model(tmp_path / "nested.keras")
    wrapped = keras.Sequential([keras.Input((64, 64, 3)), backbone, pool, dense])

    assert graph.last_conv_layer(nested) == graph.last_conv_layer(loaded) == "out_relu"
    assert "block_16_project" in graph.feature_layers(nested)
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3)).astype(np.float32)
    nonzero = 0
    for layer in ("out_relu", "block_13_expand_relu"):
        for c in range(3):
            want = gradcam.explain(flat, image, c, layer, "gradcam++")
            nonzero += want.heatmap.max() > 0
            for other in (nested, loaded, wrapped):
                got = gradcam.explain(other, image, c, layer, "gradcam++")
                np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)
                np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-4)
    assert nonzero >= 2  # the comparison compared real maps, not blanks


def test_wrong_layer_lists_valid_names(model):
    image = rgb(blob_or_plain(True, np.random.default_rng(0)))
    with pytest.raises(ModelError) as e:
        gradcam.class_activation_map(model, image, layer="block2_2_actt")
    text = str(e.value)
    assert "no layer 'block2_2_actt'" in text and "did you mean 'block2_2_act'" in text
    assert all(name in text for name in ("block1_1_conv", "block2_2_act", "block2_pool"))
    with pytest.raises(ModelError, match="not a 4-D feature map.*valid layers"):
        gradcam.class_activation_map(model, image, layer="predictions")


# --- pictures -----------------------------------------------------------------------------------------------


def test_overlay_and_panel():
    gray = np.full((20, 30), 100, np.uint8)
    heat = np.zeros((20, 30), np.float32)
    heat[5, 5] = 1.0
    for image in (gray, gray[..., None], rgb(gray)):
        out = render.overlay(image, heat)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(render.overlay(gray, heat, alpha=0.0), rgb(gray))
    hot, cold = render.overlay(gray, heat, alpha=1.0)[5, 5], render.overlay(gray, heat, alpha=1.0)[15, 25]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where it looked, blue elsewhere
    png = render.panel_png(gray, heat, "title")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 2 * img.height


# --- the command --------------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def only_cam_run(runs: Path) -> Path:
    (out,) = (runs / "cam").iterdir()
    return out


def test_cam_command_writes_panels_and_csv(blob_run, held_out, tmp_path):
    a = held_out / "blob" / "img_000.png"
    twin = tmp_path / "other" / "img_000.jpg"  # same stem as ``a``: its PNG must not overwrite a's
    twin.parent.mkdir()
    Image.open(held_out / "blob" / "img_001.png").convert("RGB").save(twin)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["cam", str(a), str(broken), str(twin), str(tmp_path / "missing.png"),
                              "--run", str(blob_run), "--runs-dir", str(runs), "--method", "gradcam++"])
    assert res.exit_code == 0, res.output
    out = only_cam_run(runs)
    assert out.name.endswith("-customnet")
    rows = read_csv(out / "cam.csv")
    assert [r["image"] for r in rows] == [str(a), str(twin)]
    assert [r["png"] for r in rows] == ["img_000.png", "img_000-2.png"]
    for r in rows:
        assert r["predicted"] == r["explained"] == "blob"
        assert 0.5 < float(r["probability"]) <= 1 and r["probability"] == r["explained_probability"]
        img = Image.open(out / r["png"])
        assert img.format == "PNG" and img.width > 2 * img.height  # input | heatmap | overlay
    skipped = (out / "skipped.txt").read_text()
    assert "broken.png\tnot a readable image" in skipped and "missing.png" in skipped
    assert "skipped" in res.output and "broken.png" in res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["method"] == "gradcam++" and meta["layer"] == "block2_2_act"
    assert meta["source_run"] == str(blob_run) and meta["n"] == 2 and meta["skipped"] == 2


def with_eval(run: Path, dest: Path, **keys) -> Path:
    """A copy of ``run`` whose config.yaml sets eval.<key> for each keyword."""
    shutil.copytree(run, dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["eval"].update(keys)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dest


def test_a_runs_own_explanation_is_what_cam_and_the_server_draw(blob_run, held_out, tmp_path):
    run = with_eval(blob_run, tmp_path / "run", cam_method="gradcam", cam_layers=["block1_2_act"])
    image = held_out / "blob" / "img_000.png"
    res = runner.invoke(app, ["cam", str(image), "--run", str(run), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    meta = json.loads((only_cam_run(tmp_path / "runs") / "meta.json").read_text())
    assert (meta["method"], meta["layer"]) == ("gradcam", "block1_2_act")
    assert KerasBackend(load_run(run)).explanation == ("gradcam", ["block1_2_act"])
    plain = KerasBackend(load_run(blob_run)).explanation  # no choice in the run: the architecture's default
    assert plain == gradcam.default_explanation(load_run(blob_run).model) and plain[1] != ["block1_2_act"]
    # a layer the model lacks is named before any cam run directory
    bad = with_eval(blob_run, tmp_path / "bad", cam_layers=["block7_2_act"])
    res = runner.invoke(app, ["cam", str(image), "--run", str(bad), "--runs-dir", str(tmp_path / "runs2")])
    assert res.exit_code != 0 and "block7_2_act" in res.output and "block2_2_act" in res.output
    assert not (tmp_path / "runs2" / "cam").exists()


def test_cam_latest_run_explains_a_chosen_class(blob_run, held_out):
    """No --run: the latest train run under --runs-dir; --class accepts any spelling of a class name."""
    runs = blob_run.parent.parent
    res = runner.invoke(app, ["cam", str(held_out / "blob"), "--class", "Plain", "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    (out,) = (runs / "cam").iterdir()
    rows = read_csv(out / "cam.csv")
    assert len(rows) == 3 and {r["explained"] for r in rows} == {"plain"}
    assert all(r["predicted"] == "blob" and float(r["explained_probability"]) < 0.5 for r in rows)
    assert json.loads((out / "meta.json").read_text())["explained_class"] == "plain"


def test_unknown_class_is_a_clear_error(blob_run, held_out, tmp_path):
    res = runner.invoke(app, ["cam", str(held_out / "blob" / "img_000.png"), "--class", "pituitary",
                              "--run", str(blob_run), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 2
    assert "unknown class 'pituitary'" in res.output and "blob, plain" in res.output
    assert not (tmp_path / "runs" / "cam").exists()  # nothing half-made


def test_wrong_layer_on_the_command_line(blob_run, held_out, tmp_path):
    res = runner.invoke(app, ["cam", str(held_out / "blob" / "img_000.png"), "--layer", "conv5_block3_out",
                              "--run", str(blob_run), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 1
    assert "no layer 'conv5_block3_out'" in res.output and "block2_2_act" in res.output
    assert not (tmp_path / "runs" / "cam").exists()


def test_bad_requests(blob_run, held_out, tmp_path):
    args = ["--run", str(blob_run), "--runs-dir", str(tmp_path / "runs")]
    res = runner.invoke(app, ["cam", *args])
    assert res.exit_code == 2 and "--gallery" in res.output
    res = runner.invoke(app, ["cam", str(held_out / "blob" / "img_000.png"), "--method", "cam", *args])
    assert res.exit_code == 2 and "gradcam++" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["cam", str(tmp_path / "empty"), *args])
    assert res.exit_code == 1 and "no image files in" in res.output
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    res = runner.invoke(app, ["cam", str(bad), *args])
    assert res.exit_code == 1 and "none of the 1 images could be read" in res.output


def test_gallery(blob_run, held_out, tmp_path):
    (held_out / "blob" / "zzz_broken.png").write_bytes(b"junk")
    runs = tmp_path / "runs"
    args = ["cam", "--gallery", str(held_out), "--per-class", "2", "--seed", "7", "--run", str(blob_run),
            "--runs-dir", str(runs)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    (out,) = (runs / "cam").iterdir()
    grids = {p.name for p in out.glob("gallery*.png")}
    assert grids == {"gallery.png", "gallery_blob.png", "gallery_plain.png"}
    rows = read_csv(out / "cam.csv")
    assert [r["true"] for r in rows] == ["blob", "blob", "plain", "plain"]
    for r in rows:
        assert r["correct"] == str(r["true"] == r["predicted"]).lower()
        assert r["png"].startswith(r["true"] + "/") and (out / r["png"]).is_file()
    for grid in grids:
        assert_png_figure(out / grid)  # drawn at a readable size, not blank
    # the pick is seeded: the same seed picks the same images, a broken pick is replaced by the next one
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    second = max((runs / "cam").iterdir(), key=lambda p: p.name)
    assert [r["image"] for r in read_csv(second / "cam.csv")] == [r["image"] for r in rows]


# --- localisation against annotated boxes (cam --boxes) -------------------------------------------------------


def write_boxed_blobs(root: Path, n: int = 30) -> tuple[Path, Path]:
    """Held-out blob images, boxes.csv with each blob's box, and control.csv with the box transposed (where
    the blob is not); returns (true CSV, control CSV)."""
    rows, control = [], []
    for i, gray in enumerate(held_out_blobs(n)):
        path = root / "blob" / f"b{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray).save(path)
        ys, xs = np.nonzero(gray >= 200)
        xc, yc = (xs.min() + xs.max() + 1) / 2 / SIZE, (ys.min() + ys.max() + 1) / 2 / SIZE
        side = (xs.max() - xs.min() + 1) / SIZE
        rows.append(f"blob/{path.name},blob,{xc:.4f},{yc:.4f},{side:.4f},{side:.4f}")
        control.append(f"blob/{path.name},blob,{yc:.4f},{xc:.4f},{side:.4f},{side:.4f}")
    header = "path,class,x_center,y_center,width,height\n"
    (root / "boxes.csv").write_text(header + "\n".join(rows) + "\nblob/missing.png,blob,0.5,0.5,0.1,0.1\n")
    (root / "control.csv").write_text(header + "\n".join(control) + "\n")
    return root / "boxes.csv", root / "control.csv"


def test_cam_boxes_scores_a_model_that_localises_and_a_control_that_must_fail(blob_run, tmp_path):
    boxes, control = write_boxed_blobs(tmp_path / "boxed")
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["cam", "--boxes", str(boxes), "--run", str(blob_run), "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    out = only_cam_run(runs)
    s = json.loads((out / "localisation.json").read_text())
    assert s["model"]["n"] == 30 and s["accuracy"] >= 0.9 and s["method"] == "layercam"
    assert "line 32" in (out / "localisation_problems.txt").read_text()  # the row whose image is missing
    rows = read_csv(out / "localisation.csv")
    assert len(rows) == 30 and {"pointing", "energy", "prior_energy"} <= set(rows[0])
    assert_png_figure(out / "gallery_localisation.png")  # drawn at a readable size, not blank
    assert "centre prior" in (out / "localisation.md").read_text()
    res = runner.invoke(app, ["cam", "--boxes", str(control), "--run", str(blob_run), "--runs-dir",
                              str(tmp_path / "control_runs")])
    assert res.exit_code == 0, res.output
    c = json.loads((only_cam_run(tmp_path / "control_runs") / "localisation.json").read_text())
    # the blob is 1/16 of the image: maps on it score well above an even spread, on its mirror image well below
    assert s["model"]["energy"] > 2.0, s["model"]
    assert s["model"]["energy"] > 2 * c["model"]["energy"], (s["model"], c["model"])
    assert s["model"]["pointing_tol"] > c["model"]["pointing_tol"]


def test_cam_boxes_says_which_scored_images_the_run_trained_on(blob_run, tmp_path):
    """Boxes over held-out blobs and over five of the run's own training blobs: the report counts the five and
    quotes a row without them, whose n is the held-out count."""
    boxes, _ = write_boxed_blobs(tmp_path / "boxed", n=12)
    split = pd.read_csv(blob_run / "split.csv")
    trained = [p for p, s in zip(split["path"], split["split"]) if s == "train" and Path(p).parent.name == "blob"][:5]
    rows = []
    for p in trained:
        gray = np.asarray(Image.open(p).convert("L"))
        ys, xs = np.nonzero(gray >= 200)
        h, w = gray.shape
        rows.append(f"{Path(p).resolve()},blob,{(xs.min() + xs.max() + 1) / 2 / w:.4f},"
                    f"{(ys.min() + ys.max() + 1) / 2 / h:.4f},{(xs.max() - xs.min() + 1) / w:.4f},"
                    f"{(ys.max() - ys.min() + 1) / h:.4f}")
    assert len(rows) == 5
    boxes.write_text(boxes.read_text() + "\n".join(rows) + "\n")
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["cam", "--boxes", str(boxes), "--run", str(blob_run), "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    out = only_cam_run(runs)
    s = json.loads((out / "localisation.json").read_text())
    assert s["model"]["n"] == 17 and s["training_images"] == 5 and s["unseen"]["model"]["n"] == 12
    assert "5 of these 17 images are training images" in (out / "localisation.md").read_text()
    assert "not trained on" in (out / "localisation.md").read_text()
    # held-out blobs alone: nothing to flag, no extra row
    held, _ = write_boxed_blobs(tmp_path / "held", n=6)
    res = runner.invoke(app, ["cam", "--boxes", str(held), "--run", str(blob_run), "--runs-dir", str(tmp_path / "r2")])
    assert res.exit_code == 0, res.output
    s = json.loads((only_cam_run(tmp_path / "r2") / "localisation.json").read_text())
    assert s["training_images"] == 0 and "unseen" not in s
