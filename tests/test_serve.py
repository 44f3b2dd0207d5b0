"""`braintumor serve`: endpoints and bad inputs through TestClient, settings, and one real server process."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient  # the [serve] extra: make install installs it, so never a skip
from PIL import Image

from braintumor.config import load_config
from braintumor.errors import ConfigError
from braintumor.metrics import scale
from braintumor.serve.app import create_app
from braintumor.serve.predictor import Predictor
from braintumor.serve.settings import ServeSettings, default_concurrency, load_settings
from tests.conftest import CLASSES, blob_image, fold_probabilities, train_tiny_run, two_fold_run

# --- fixtures: one tiny trained run and one loaded model per module ---------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("serve"), per_class=6)


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    return Predictor.load(run_dir)


def settings(**kw) -> ServeSettings:
    return ServeSettings(**{"concurrency": 2, **kw})


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(settings(), predictor)) as c:
        yield c


def image_bytes(fmt: str = "PNG", size: int = 48, label: int = 0, mode: str = "L") -> bytes:
    img = Image.fromarray(blob_image(label, size, np.random.default_rng(label))).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height: a decompression bomb, as seen before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def upload(data: bytes, name: str = "scan.png", field: str = "file"):
    return {field: (name, data, "application/octet-stream")}


def assert_plain_error(r, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    for w in words:
        assert w in body["detail"], body["detail"]
    assert "Traceback" not in r.text and 'File "' not in r.text


# --- endpoints ---------------------------------------------------------------------------------------------


def test_health_is_ready_only_after_startup(predictor):
    app = create_app(settings(), predictor)
    before = TestClient(app)  # not entered: the lifespan has not run
    r = before.get("/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert_plain_error(before.post("/predict", files=upload(image_bytes())), 503, "still loading")
    with TestClient(app) as c:
        assert c.get("/health").json() == {"status": "ready", "model": "customnet"}


def test_lifespan_loads_and_warms_up_the_run_itself(run_dir):
    with TestClient(create_app(settings(run=str(run_dir)))) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/predict", files=upload(image_bytes())).status_code == 200


def test_model_describes_the_run_without_server_paths(client, run_dir):
    r = client.get("/model")
    assert r.status_code == 200
    m = r.json()
    assert m["arch"] == "customnet" and m["classes"] == list(CLASSES)
    channels = 1 if load_config("customnet").data.color_mode == "grayscale" else 3  # the shipped recipe's
    assert m["input"]["height"] == m["input"]["width"] == 32 and m["input"]["channels"] == channels
    assert "[0, 1]" in m["preprocessing"]
    assert m["decision"]["has_gate"] is True and m["decision"]["temperature"] > 0 and m["runtime"] == "keras"
    assert m["explanation"] == {"method": "layercam", "layers": ["block2_2_act"]}  # what cam draws for customnet
    assert 0 <= m["metrics"]["accuracy"] <= 1 and "per_class" in m["metrics"]
    assert m["run"] == run_dir.name and m["version"]["braintumor"]
    assert m["version"]["trained_with"]["tensorflow"]
    assert m["limits"]["max_upload_bytes"] == ServeSettings().max_upload_bytes
    assert str(run_dir.parent) not in r.text


@pytest.mark.parametrize("fmt, mode", [("PNG", "L"), ("JPEG", "RGB"), ("BMP", "RGB"), ("PNG", "RGBA")])
def test_predict_matches_the_training_preprocessing(client, predictor, fmt, mode):
    from braintumor.data import read_image

    data = image_bytes(fmt, mode=mode, label=2)
    r = client.post("/predict", files=upload(data, f"scan.{fmt.lower()}"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"status", "reason", "answered", "class", "probabilities", "distance_ratio", "head_margin",
                         "latency_ms"}
    assert list(body["probabilities"]) == list(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    top = max(body["probabilities"], key=body["probabilities"].get)
    assert body["class"] == (top if body["status"] == "ok" else None) and body["answered"] == (body["status"] == "ok")
    assert body["latency_ms"] > 0
    # the same pixels training would have seen, through predict() and the run's temperature, averaged with the
    # mirror image as `braintumor predict` does under the run's eval.tta: the served numbers are the CLI's numbers
    assert predictor.spec.size == 32 and predictor.run.config.eval.tta
    x = read_image(data, predictor.spec)[None].astype(np.float32)
    raw = (predictor.model.predict(x, verbose=0) + predictor.model.predict(x[:, :, ::-1], verbose=0)) / 2
    expected = scale(raw, predictor.decider.temperature)[0]
    np.testing.assert_allclose(list(body["probabilities"].values()), expected, atol=1e-5)


def test_predict_batch_keeps_order_and_names(client):
    blobs = [image_bytes(label=i) for i in range(3)]
    files = [("files", (f"scan{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["scan0.png", "scan1.png", "scan2.png"]
    for blob, item in zip(blobs, results, strict=True):
        single = client.post("/predict", files=upload(blob)).json()
        assert (item["class"], item["status"], item["reason"]) == (single["class"], single["status"],
                                                                   single["reason"])
        np.testing.assert_allclose(list(item["probabilities"].values()),
                                   list(single["probabilities"].values()), atol=1e-5)
    assert r.json()["latency_ms"] > 0


def test_cam_returns_a_png_overlay_of_the_predicted_or_asked_class(client):
    data = image_bytes(label=1)
    r = client.post("/cam", files=upload(data))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    probs = client.post("/predict", files=upload(data)).json()["probabilities"]
    assert r.headers["x-class"] == max(probs, key=probs.get)  # /cam explains the most probable class
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (32, 32) and img.mode == "RGB"

    r = client.post("/cam", params={"class": "Notumor"}, files=upload(data))
    assert r.status_code == 200 and r.headers["x-class"] == "notumor" and r.headers["x-class-index"] == "2"
    assert 0 <= float(r.headers["x-probability"]) <= 1
    r = client.post("/cam", params={"class": "3"}, files=upload(data))
    assert r.headers["x-class"] == "pituitary"


def test_docs_and_openapi_with_examples(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    # offline: Swagger UI and ReDoc come from this server, never a CDN
    assert "cdn" not in docs.text.lower() and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "cdn" not in redoc.text.lower() and "fonts.googleapis" not in redoc.text
    spec = client.get("/openapi.json").json()
    assert {"/health", "/model", "/predict", "/predict/batch", "/cam"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["Prediction"]["examples"][0]["class"] == "glioma"
    assert any(p["name"] == "class" for p in spec["paths"]["/cam"]["post"]["parameters"])
    assert "413" in spec["paths"]["/predict"]["post"]["responses"]


def test_page_and_its_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and 'id="file"' in r.text and 'id="bars"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "/predict" in client.get("/static/app.js").text
    assert client.get("/static/style.css").status_code == 200


def test_no_cors_unless_configured(client, predictor):
    r = client.get("/health", headers={"Origin": "http://intranet.example"})
    assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(settings(cors_origins=("http://intranet.example",)), predictor)) as c:
        r = c.get("/health", headers={"Origin": "http://intranet.example"})
        assert r.headers["access-control-allow-origin"] == "http://intranet.example"
        r = c.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in r.headers


# --- the out-of-distribution status (issue 13) -------------------------------------------------------------


def colour_photo() -> bytes:
    rng = np.random.default_rng(5)
    buf = io.BytesIO()
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_colour_photo_is_out_of_distribution_and_gets_no_class(client):
    body = client.post("/predict", files=upload(colour_photo())).json()
    assert body["status"] == "out_of_distribution" and "colour" in body["reason"]
    assert body["class"] is None and body["answered"] is False
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)  # still there, marked
    r = client.post("/predict/batch", files=[("files", ("photo.png", colour_photo(), "image/png")),
                                             ("files", ("scan.png", image_bytes(), "image/png"))])
    first, second = r.json()["results"]
    assert first["status"] == "out_of_distribution" and first["class"] is None
    assert second["status"] in ("ok", "uncertain", "out_of_distribution") and second["reason"]


def test_a_run_without_a_gate_still_predicts_and_says_so(run_dir, tmp_path):
    import shutil

    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    for name in ("gate.json", "gate.npz", "calibration.json"):
        (old / name).unlink(missing_ok=True)  # a 1-epoch run may have no temperature fitted
    with TestClient(create_app(settings(run=str(old)))) as c:
        body = c.post("/predict", files=upload(image_bytes())).json()
        assert body["status"] == "ok" and "no out-of-distribution gate" in body["reason"]
        assert body["class"] in CLASSES and body["distance_ratio"] is None
        decision = c.get("/model").json()["decision"]
        assert decision == {"temperature": 1.0, "has_gate": False, "gate": None, "gate_modalities": ["MR", "OT"],
                            "notumor_doubt": None}


# --- access and monitoring (issue 15) ----------------------------------------------------------------------


def test_an_api_key_guards_every_route_but_health(predictor, tmp_path, caplog):
    key = "k3y-" + "x" * 20
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    for s in (settings(api_key=key), settings(api_key_file=str(key_file))):
        with caplog.at_level("INFO", logger="braintumor"), TestClient(create_app(s, predictor)) as c:
            assert c.get("/health").status_code == 200
            for method, path in (("get", "/"), ("get", "/model"), ("get", "/docs"), ("get", "/openapi.json")):
                assert_plain_error(getattr(c, method)(path), 401, "API key")
            assert_plain_error(c.post("/predict", files=upload(image_bytes())), 401, "X-API-Key")
            assert_plain_error(c.get("/model", headers={"X-API-Key": "wrong"}), 401, "wrong")
            assert c.get("/model", headers={"X-API-Key": key}).status_code == 200
            assert c.get("/model", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            r = c.post("/predict", files=upload(image_bytes()), headers={"X-API-Key": key})
            assert r.status_code == 200 and r.json()["status"]
        assert key not in caplog.text and "wrong" not in caplog.text
    with pytest.raises(ConfigError, match="empty"):
        load_settings(environ={"BRAINTUMOR_API_KEY": "   "})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        create_app(settings(api_key_file=str(tmp_path / "empty")), predictor)


def test_metrics_count_requests_and_verdicts(predictor):
    with TestClient(create_app(settings(), predictor)) as c:
        assert c.get("/metrics").status_code == 404  # opt-in
    with TestClient(create_app(settings(metrics=True), predictor)) as c:
        verdicts = [c.post("/predict", files=upload(body)).json()["status"] for body in (image_bytes(), colour_photo())]
        c.post("/predict", files=upload(b"junk"))
        text = c.get("/metrics").text
    assert 'braintumor_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert 'braintumor_refused_requests_total{route="/predict",status="400"} 1.0' in text
    # The colour photo is always out of distribution; what the tiny model's gate makes of the scan varies with its
    # training, so the counters are checked against the verdicts the two responses carried.
    assert verdicts[1] == "out_of_distribution"
    for status in set(verdicts):
        assert f'braintumor_verdicts_total{{status="{status}"}} {float(verdicts.count(status))}' in text
    assert 'braintumor_request_duration_seconds_count{route="/predict"} 3.0' in text
    assert "braintumor_model_load_seconds" in text and 'runtime="keras"' in text


def test_every_response_and_log_line_carries_a_request_id(client, caplog):
    with caplog.at_level("INFO", logger="braintumor"):
        r = client.get("/health")
        mine = client.get("/health", headers={"X-Request-ID": "scanner-42"})
        odd = client.get("/health", headers={"X-Request-ID": "no spaces <allowed>"})
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and mine.headers["x-request-id"] == "scanner-42"
    assert odd.headers["x-request-id"] != "no spaces <allowed>"
    ids = [getattr(rec, "request_id", None) for rec in caplog.records if rec.name == "braintumor.serve"]
    assert rid in ids and "scanner-42" in ids


# --- bad input: a 4xx with a plain detail, never a crash ---------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/cam"])
def test_not_an_image(client, path):
    assert_plain_error(client.post(path, files=upload(b"hello, I am a text file\n" * 20, "notes.txt")), 400,
                       "not a readable image")


@pytest.mark.parametrize("path", ["/predict", "/cam"])
def test_empty_file(client, path):
    assert_plain_error(client.post(path, files=upload(b"")), 400, "empty")


@pytest.mark.parametrize("path", ["/predict", "/cam"])
def test_truncated_jpeg(client, path):
    data = image_bytes("JPEG", size=200, mode="RGB")
    r = client.post(path, files=upload(data[: len(data) // 2], "scan.jpg"))
    assert_plain_error(r, 400, "not a readable image")
    assert "BytesIO" not in r.text  # Pillow's in-memory file name is noise


@pytest.mark.parametrize("path, field", [("/predict", "image"), ("/cam", "upload"),
                                         ("/predict/batch", "file")])
def test_wrong_field_name(client, path, field):
    expected = "files" if path.endswith("batch") else "file"
    assert_plain_error(client.post(path, files=upload(image_bytes(), field=field)), 422,
                       f"no multipart field '{expected}'")


def test_text_instead_of_a_file(client):
    assert_plain_error(client.post("/predict", data={"file": "scan.jpg"}), 422, "must be an uploaded file")


def test_no_body_at_all(client):
    assert_plain_error(client.post("/predict"), 422, "no multipart field 'file'")


def test_unknown_class(client):
    r = client.post("/cam", params={"class": "gliomaa"}, files=upload(image_bytes()))
    assert_plain_error(r, 422, "unknown class 'gliomaa'", "did you mean 'glioma'", "pituitary")
    assert_plain_error(client.post("/cam", params={"class": "7"}, files=upload(image_bytes())), 422,
                       "unknown class '7'")


def test_over_the_byte_limit(predictor):
    data = image_bytes(size=64)
    with TestClient(create_app(settings(max_upload_bytes=len(data) - 1), predictor)) as c:
        assert_plain_error(c.post("/predict", files=upload(data)), 413, "upload limit")
        assert_plain_error(c.post("/cam", files=upload(data)), 413, "upload limit")
        files = [("files", ("a.png", image_bytes(size=8), "image/png")),
                 ("files", ("b.png", data, "image/png"))]
        assert_plain_error(c.post("/predict/batch", files=files), 413, "file 2 of 2", "upload limit")


def test_request_body_over_the_limit_is_refused_before_parsing(predictor):
    with TestClient(create_app(settings(max_upload_bytes=1000), predictor)) as c:
        big = b"\0" * (1024 * 1024 + 2000)  # over one file plus the multipart allowance
        assert_plain_error(c.post("/predict", files=upload(big)), 413, "request body is over the limit")

        def chunks():  # no Content-Length: the bytes are counted as they arrive
            for _ in range(20):
                yield b"\0" * 100_000

        r = c.post("/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert_plain_error(r, 413, "request body is over the limit")
        assert_plain_error(c.post("/predict", content=b"x", headers={"content-length": "abc"}), 400,
                           "Content-Length")


def test_over_the_pixel_limit(predictor):
    data = image_bytes(size=300)  # 90,000 pixels, a few kB
    with TestClient(create_app(settings(max_pixels=50_000), predictor)) as c:
        assert_plain_error(c.post("/predict", files=upload(data)), 413, "300x300", "50,000")
        assert_plain_error(c.post("/cam", files=upload(data)), 413, "pixels")


@pytest.mark.parametrize("width", [20_000, 100_000])  # 400 M pixels; 10 G: past Pillow's own bomb limit too
def test_decompression_bomb_is_refused_from_its_header(client, width):
    data = png_claiming(width, width)
    assert len(data) < 100
    assert_plain_error(client.post("/predict", files=upload(data)), 413, "pixel")


def test_too_many_files_in_a_batch(predictor):
    with TestClient(create_app(settings(max_batch_files=2), predictor)) as c:
        files = [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(3)]
        assert_plain_error(c.post("/predict/batch", files=files), 413, "3 files", "limit of 2")


def test_one_bad_file_fails_the_batch_and_is_named(client):
    files = [("files", ("good.png", image_bytes(), "image/png")),
             ("files", ("bad.png", b"junk", "image/png"))]
    assert_plain_error(client.post("/predict/batch", files=files), 400, "file 2 of 2", "not a readable image")


def test_unexpected_errors_reach_the_client_as_a_plain_500(predictor, monkeypatch):
    def broken(images, stats=None):
        raise RuntimeError("secret internal state /home/model/weights")

    monkeypatch.setattr(predictor, "classify", broken)
    with TestClient(create_app(settings(), predictor), raise_server_exceptions=False) as c:
        r = c.post("/predict", files=upload(image_bytes()))
    assert_plain_error(r, 500, "internal server error")
    assert "secret" not in r.text and "RuntimeError" not in r.text


def test_inference_is_bounded_and_waits_end_in_503(predictor, monkeypatch):
    running, peak, lock = [0], [0], threading.Lock()
    real = predictor.predict

    def slow(data):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.4)
        with lock:
            running[0] -= 1
        return real(data)

    monkeypatch.setattr(predictor, "predict", slow)
    codes = []
    with TestClient(create_app(settings(concurrency=2, queue_timeout=0.6), predictor)) as c:
        def one():
            codes.append(c.post("/predict", files=upload(image_bytes())).status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert peak[0] == 2  # never more than `concurrency` at once
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes


# --- settings ----------------------------------------------------------------------------------------------


def test_settings_defaults_are_safe():
    s = ServeSettings()
    assert s.host == "127.0.0.1" and s.cors_origins == () and s.port == 8000
    assert 1 <= s.concurrency == default_concurrency() <= 8


def test_settings_from_environment_then_flags():
    env = {"BRAINTUMOR_PORT": "9001", "BRAINTUMOR_HOST": "0.0.0.0",
           "BRAINTUMOR_MAX_UPLOAD_BYTES": "1_000_000",
           "BRAINTUMOR_CONCURRENCY": "3", "BRAINTUMOR_CORS_ORIGINS": "http://a.example, http://b.example",
           "BRAINTUMOR_QUEUE_TIMEOUT": "2.5", "BRAINTUMOR_NOTUMOR_DOUBT": "0.2", "UNRELATED": "x"}
    s = load_settings({"port": None}, env)
    got = (s.port, s.host, s.max_upload_bytes, s.concurrency, s.queue_timeout, s.notumor_doubt)
    assert got == (9001, "0.0.0.0", 1_000_000, 3, 2.5, 0.2)
    assert s.cors_origins == ("http://a.example", "http://b.example")
    assert load_settings({"port": 9100, "cors_origins": ["http://c.example"]}, env).port == 9100


@pytest.mark.parametrize("env, words", [
    ({"BRAINTUMOR_PORT": "eighty"}, ["BRAINTUMOR_PORT", "eighty"]),
    ({"BRAINTUMOR_CONCURRENCY": "0"}, ["concurrency", "at least 1"]),
    ({"BRAINTUMOR_LOG_LEVEL": "loud"}, ["log_level", "debug"]),
    ({"BRAINTUMOR_NOTUMOR_DOUBT": "1"}, ["notumor_doubt", "between 0 and 1"]),
])
def test_bad_settings_say_what_is_valid(env, words):
    with pytest.raises(ConfigError) as e:
        load_settings({}, env)
    for w in words:
        assert w in str(e.value)


def test_cli_refuses_a_missing_run_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from braintumor.cli import app

    r = CliRunner().invoke(app, ["serve", "--run", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["serve", "--runs-dir", str(tmp_path)])
    assert r.exit_code == 1 and "no complete run" in r.output
    r = CliRunner().invoke(app, ["serve", "--run", str(tmp_path)], env={"BRAINTUMOR_PORT": "x"})
    assert r.exit_code == 2 and "BRAINTUMOR_PORT" in r.output


# --- the real thing: `braintumor serve` in its own process on a free loopback port ------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server_process(run_dir):
    import httpx

    port = free_port()
    entry = "import sys; from braintumor.cli import main; sys.argv[0] = 'braintumor'; main()"
    cmd = [sys.executable, "-c", entry, "serve", "--run", str(run_dir), "--port", str(port)]
    env = {**os.environ, "BRAINTUMOR_CONCURRENCY": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
            while True:
                assert proc.poll() is None, f"server exited early:\n{proc.stdout.read()}"
                assert time.monotonic() < deadline, "server not ready within 120 s"
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)

            assert http.get("/model").json()["classes"] == list(CLASSES)
            data = image_bytes("JPEG", mode="RGB")
            r = http.post("/predict", files=upload(data, "patient-jane-doe.jpg"))
            assert r.status_code == 200 and r.json()["status"] in ("ok", "uncertain", "out_of_distribution")
            rid = r.headers["x-request-id"]
            assert "server" not in r.headers  # no software banner
            r = http.post("/predict/batch", files=[("files", ("a.png", image_bytes(), "image/png"))] * 2)
            assert r.status_code == 200 and len(r.json()["results"]) == 2
            r = http.post("/cam", files=upload(data))
            assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
            junk, bomb = upload(b"\xff\xd8\xff junk"), upload(png_claiming(50_000, 50_000))
            assert_plain_error(http.post("/predict", files=junk), 400, "not a readable")
            assert_plain_error(http.post("/predict", files=bomb), 413, "pixel")
            assert http.get("/health").status_code == 200  # still alive after the bad ones
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "POST /predict 200" in out and "POST /predict 413" in out  # one log line per request ...
    assert f"[{rid}] POST /predict 200" in out  # ... with the request id the response carried
    assert "patient-jane-doe" not in out  # ... without file names or content
    assert "Traceback" not in out


def test_a_kfold_run_is_served_as_the_mean_of_its_folds(run_dir, tmp_path):
    """Two different folds: the served probabilities are the k-fold run's temperature on the mean of the folds' own
    probabilities (not fold 1's, not a mean of calibrated ones); /cam says why it can't explain an ensemble."""
    import json

    kfold_dir = two_fold_run(run_dir, tmp_path)
    (kfold_dir / "calibration.json").write_text(json.dumps({"temperature": 1.7}))
    ensemble = Predictor.load(kfold_dir)
    assert ensemble.run.meta["ensemble_of"] == ["fold_1", "fold_2"]
    blob = image_bytes(label=2)
    image = ensemble.image(blob)[0][None]
    assert ensemble.backend.tta  # the k-fold run's eval.tta
    p1, p2 = fold_probabilities(kfold_dir, image, tta=True)  # the run's eval.tta, as served
    assert np.abs(p1 - p2).max() > 0.05  # the folds really differ
    mean = (p1 + p2) / 2
    np.testing.assert_allclose(ensemble.backend.scores(image)[0], mean, atol=1e-5)
    probs = ensemble.predict(blob).probs
    np.testing.assert_allclose(probs, scale(mean, 1.7)[0], atol=1e-5)
    assert np.abs(probs - scale(p1, 1.7)[0]).max() > 0.02  # an ensemble that returned fold 1 fails here
    with TestClient(create_app(settings(), ensemble)) as c:
        r = c.post("/cam", files={"file": ("x.png", blob, "image/png")})
        assert r.status_code == 400 and "ensemble" in r.json()["detail"] and "fold_1" in r.json()["detail"]
        assert c.post("/predict", files={"file": ("x.png", blob, "image/png")}).status_code == 200
