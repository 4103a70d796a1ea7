"""Shared test helpers. Fixtures are the committed files under fixtures/, written by the
real programs named in fixtures/README.md; tests never need those programs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "fixtures"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def fx(rel: str) -> Path:
    p = FIX / rel
    assert p.exists(), f"missing fixture {p}"
    return p


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run the installed `wtransplant` entry point as a user would."""
    exe = Path(sys.executable).parent / "wtransplant"
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


def cli_json(*args) -> dict:
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def assert_one_line_error(r: subprocess.CompletedProcess, code: int = 2, *needles: str):
    assert r.returncode == code, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert err[0].startswith("wtransplant: error: "), err[0]
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


@pytest.fixture
def tmp_copy(tmp_path):
    """Copy a fixture (and its sidecars) to a temp dir, so tests can chmod or corrupt it."""
    import shutil

    def _copy(rel: str) -> Path:
        src = fx(rel)
        dst = tmp_path / src.name
        shutil.copy2(src, dst)
        return dst

    return _copy
