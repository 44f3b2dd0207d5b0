"""runs.py: run directories never reused, atomic writers, meta.json status, finding runs again."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from braintumor.config import load_config
from braintumor.errors import RunError
from braintumor.runs import (
    atomic_write_json,
    atomic_write_text,
    fold_complete,
    markdown_table,
    new_run_dir,
    read_json,
    read_meta,
    resolve_run,
    run_status,
    start_run,
    write_csv,
    write_meta,
    write_skipped,
)


def test_new_run_dir_never_reuses_a_folder(tmp_path):
    a = new_run_dir(tmp_path, "train", "customnet", "my run!")
    b = new_run_dir(tmp_path, "train", "customnet", "my run!")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.parent == tmp_path / "train" and a.name.endswith("-customnet-my-run")
    assert b.name == a.name + "-2" or b.name.rsplit("-", 1)[0] != a.name.rsplit("-", 1)[0]  # same second, or not


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.txt", "hello\n")
    atomic_write_json(tmp_path / "b.json", {"x": np.float32(0.5), "y": np.arange(2), "p": tmp_path})
    assert (tmp_path / "sub" / "a.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 0.5, "y": [0, 1], "p": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.json"]
    with pytest.raises(TypeError, match="cannot write object"):
        atomic_write_json(tmp_path / "c.json", {"bad": object()})
    assert not (tmp_path / "c.json").exists() and not list(tmp_path.glob(".c.json.*"))


def test_write_csv_and_markdown_table(tmp_path):
    write_csv(tmp_path / "t.csv", ["path", "n"], [["a,b", 1], ["c", 2]])
    assert (tmp_path / "t.csv").read_bytes() == b'path,n\r\n"a,b",1\r\nc,2\r\n'
    assert markdown_table(["a", "b"], [[1, 2], ["x", None]]) == [
        "| a | b |", "|---|---|", "| 1 | 2 |", "| x | None |"]


def test_write_skipped_only_when_something_was_skipped(tmp_path):
    write_skipped(tmp_path, [])
    assert not (tmp_path / "skipped.txt").exists()
    write_skipped(tmp_path, [("a.jpg", "not an image"), ("b.png", "truncated")])
    assert (tmp_path / "skipped.txt").read_text() == "a.jpg\tnot an image\nb.png\ttruncated\n"


def test_meta_is_merged_and_status_follows_the_outcome(tmp_path):
    cfg = load_config(arch="customnet")
    run = new_run_dir(tmp_path, "train", "customnet")
    start_run(run, cfg, "train", extra=1)
    assert (run / "config.yaml").is_file()
    assert read_meta(run)["status"] == "running" and read_meta(run)["extra"] == 1
    with run_status(run):
        write_meta(run, n=3)
    meta = read_meta(run)
    assert (meta["status"], meta["n"], meta["extra"], meta["command"]) == ("complete", 3, 1, "train")
    with pytest.raises(ValueError), run_status(run):
        raise ValueError("boom")
    assert read_meta(run)["status"] == "failed" and read_meta(run)["error"] == "ValueError: boom"
    with pytest.raises(KeyboardInterrupt), run_status(run):
        raise KeyboardInterrupt
    assert read_meta(run)["status"] == "interrupted"


def test_read_json_names_what_is_wrong(tmp_path):
    with pytest.raises(RunError, match="is not a run directory"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{broken")
    with pytest.raises(RunError, match="is damaged"):
        read_json(tmp_path / "meta.json")


def _run(root, name, status, model=True, age=0.0):
    path = root / "train" / name
    path.mkdir(parents=True)
    (path / "meta.json").write_text(json.dumps({"command": "train", "status": status}))
    if model:
        (path / "model.keras").write_bytes(b"")
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def test_resolve_run_finds_the_latest_complete_run(tmp_path):
    old = _run(tmp_path, "a", "complete", age=100)
    _run(tmp_path, "b", "failed", age=50)
    assert resolve_run("latest", tmp_path) == old
    assert resolve_run(None, tmp_path) == old
    newer = _run(tmp_path, "c", "complete", age=10)
    assert resolve_run("latest", tmp_path) == newer
    with pytest.raises(RunError, match="no complete run"):
        resolve_run(None, tmp_path / "elsewhere")
    with pytest.raises(RunError, match="does not exist"):
        resolve_run(tmp_path / "nope", tmp_path)
    bare = _run(tmp_path, "d", "interrupted", model=False)
    with pytest.raises(RunError, match="has no model.keras"):
        resolve_run(bare, tmp_path)


def test_fold_complete_needs_status_and_files(tmp_path):
    fold = tmp_path / "fold_1"
    assert not fold_complete(fold)
    fold.mkdir()
    write_meta(fold, status="complete")
    assert not fold_complete(fold)
    for f in ("model.keras", "metrics.json", "predictions.csv"):
        (fold / f).write_text("x")
    assert fold_complete(fold)
    write_meta(fold, status="failed")
    assert not fold_complete(fold)


def test_atomic_writes_are_as_readable_as_a_plain_file(tmp_path):
    import os
    import stat

    from braintumor.runs import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "b.txt").write_text("x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.txt")
