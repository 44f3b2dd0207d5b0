"""The conftest hook that turns every skip into a failure under CI=true: a pytest run on two tiny files, in a
subprocess so that its environment and exit code are its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import CI_SKIP

MODULE_SKIP = '''import pytest
pytest.importorskip("no_such_package_xyz", reason="the [zz] extra is missing")
def test_never(): pass
'''
TEST_SKIP = '''import pytest
def test_passes(): pass
def test_skips(): pytest.skip("no chromium here")
@pytest.mark.xfail(reason="a known failure, not a skip")
def test_xfails(): assert False
'''


def run_pytest(folder: Path, ci: str | None, *args: str) -> subprocess.CompletedProcess:
    """pytest on ``folder`` with this suite's conftest and CI set to ``ci`` (unset when None)."""
    (folder / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_skips_fail_the_run_under_ci_and_stay_skips_elsewhere(tmp_path: Path):
    (tmp_path / "test_skips.py").write_text(TEST_SKIP)
    local = run_pytest(tmp_path, None, "test_skips.py")
    assert local.returncode == 0 and "1 passed, 1 skipped, 1 xfailed" in local.stdout, local.stdout
    ci = run_pytest(tmp_path, "true", "test_skips.py")
    assert ci.returncode == 1, ci.stdout
    assert "1 failed, 1 passed, 1 xfailed" in ci.stdout, ci.stdout  # the xfail is not a skip and stays one
    assert f"FAILED test_skips.py::test_skips - {CI_SKIP}Skipped: no chromium here" in ci.stdout, ci.stdout


def test_a_module_that_skips_itself_at_import_fails_collection_under_ci(tmp_path: Path):
    (tmp_path / "test_module_skip.py").write_text(MODULE_SKIP)
    ci = run_pytest(tmp_path, "true")
    assert ci.returncode == 2, ci.stdout  # interrupted by a collection error (a quiet skip exits 5: nothing ran)
    assert "ERROR test_module_skip.py" in ci.stdout and "the [zz] extra is missing" in ci.stdout, ci.stdout
