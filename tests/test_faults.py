"""Faults: a run killed at any point leaves no partial output under the final name.

Outputs are written to a temporary name in the destination folder and renamed when
complete, so whatever exists under the final name is whole. These tests kill the command
line at several points (seeded), and crash a run in the middle of writing the model.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fx

WT = str(Path(sys.executable).parent / "wtransplant")


def _kill_after(cmd: list, delay: float, cwd: Path) -> int | None:
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        return p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return None


def _check_final(path: Path) -> bool:
    """Whatever exists under the final name is whole (a run may be killed after its rename,
    while TensorFlow shuts down). Returns whether the file exists."""
    if path.exists():
        if path.suffix == ".keras":
            import keras

            keras.models.load_model(path)  # whole, loadable
        elif path.suffix == ".onnx":
            import onnx

            onnx.checker.check_model(onnx.load(str(path)))
        return True
    return False


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_rebuild_killed_at_random_points(tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "m.keras"
    cmd = [WT, "rebuild", "--spec", str(fx("specs/torch_cnn.yaml")), "-o", str(out)]
    t0 = time.perf_counter()
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True).returncode == 0
    full = time.perf_counter() - t0
    out.unlink()
    killed_before_output = 0
    # random points over the whole run, and one early point that surely lands while it works
    # (a loaded machine makes the first, timed run slower than the later ones)
    delays = [min(0.3, full / 4)] + sorted(rng.uniform(0.2, full * 1.1) for _ in range(3))
    for delay in delays:
        rc = _kill_after(cmd, delay, tmp_path)
        if not _check_final(out):
            killed_before_output += rc is None
        else:
            out.unlink()
    assert killed_before_output >= 1  # the kills did land while the run was working


@pytest.mark.slow
def test_export_killed_at_random_points(tmp_path):
    model = tmp_path / "m.keras"
    assert subprocess.run([WT, "rebuild", "--spec", str(fx("specs/torch_gru.yaml")), "-o",
                           str(model)], capture_output=True).returncode == 0
    out = tmp_path / "m.onnx"
    cmd = [WT, "export", str(model), "--format", "onnx", "-o", str(out)]
    t0 = time.perf_counter()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    full = time.perf_counter() - t0
    out.unlink()
    killed_before_output = 0
    for f in (0.3, 0.6, 0.9):
        rc = _kill_after(cmd, f * full, tmp_path)
        if not _check_final(out):
            killed_before_output += rc is None
        else:
            out.unlink()
    assert killed_before_output >= 1


CRASH_MID_WRITE = """
import os, sys
import keras
real_save = keras.Model.save

def half_save(self, path, *a, **k):
    real_save(self, path, *a, **k)
    with open(path, "r+b") as fh:       # the file is half written ...
        fh.truncate(os.path.getsize(path) // 2)
    os._exit(137)                         # ... when the process dies

keras.Model.save = half_save
from wtransplant_cli.main import main
sys.argv = ["wtransplant"] + sys.argv[1:]
main()
"""


def test_crash_while_writing_leaves_no_file_under_the_final_name(tmp_path):
    out = tmp_path / "m.keras"
    r = subprocess.run([sys.executable, "-c", CRASH_MID_WRITE, "rebuild", "--spec",
                        str(fx("specs/octave_mlp.yaml")), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 137, r.stderr[-2000:]
    assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(n.startswith(".m.tmp-") for n in leftovers), leftovers  # only the temp file
