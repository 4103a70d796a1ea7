"""Benchmark: start-up of a command that builds a model (issue 15.1), against
`python -c "import keras"` on the TensorFlow backend, in the same run.

Measured, each in a fresh process, interleaved, median of --repeat runs:
- baseline: `python -c "import keras"` with KERAS_BACKEND=tensorflow;
- `python -c "import keras"` with KERAS_BACKEND=numpy (the light backend's own floor);
- ours: `wtransplant rebuild --spec <seeds spec> -o X.keras --quiet` with no KERAS_BACKEND
  (the backend wtransplant chooses; the seeds' settled 3-layer MLP, fixtures/layered/);
- the same rebuild with KERAS_BACKEND=tensorflow (what every rebuild paid before).
Goal (issue 15): the seeds' MLP rebuild <= 2 s wall end to end; the ratio to TensorFlow's
`import keras` is printed alongside.

    .venv/bin/python bench/bench_startup.py [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fixtures" / "layered" / "seeds_mlp"
GOAL_S = 2.0


def _env(backend: str | None) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    e["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if backend:
        e["KERAS_BACKEND"] = backend
    return e


def _wall(cmd: list[str], backend: str | None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(backend), cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).parent / "wtransplant")
    py = sys.executable
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        spec = td / "seeds.yaml"
        subprocess.run([exe, "spec", str(SEEDS) + ".h5", "--inputs", f"{SEEDS}.io.npz:x",
                        "--expected", f"{SEEDS}.io.npz:y", "-o", str(spec), "-q"],
                       check=True, capture_output=True, env=_env(None))
        report = td / "auto.json"
        runs: dict[str, list[float]] = {"import_keras_tf": [], "import_keras_numpy": [],
                                        "rebuild_auto": [], "rebuild_tf": []}
        for i in range(args.repeat):
            runs["import_keras_tf"].append(_wall([py, "-c", "import keras"], "tensorflow"))
            runs["import_keras_numpy"].append(_wall([py, "-c", "import keras"], "numpy"))
            runs["rebuild_auto"].append(_wall(
                [exe, "rebuild", "--spec", str(spec), "-o", str(td / f"a{i}.keras"),
                 "--report", str(report), "-q"], None))
            runs["rebuild_tf"].append(_wall(
                [exe, "rebuild", "--spec", str(spec), "-o", str(td / f"t{i}.keras"), "-q"],
                "tensorflow"))
        rep = json.loads(report.read_text())
    med = {k: statistics.median(v) for k, v in runs.items()}
    out = {
        "task": "rebuild the seeds' 3-layer MLP end to end (spec settled by data), wall",
        "baseline": '`python -c "import keras"` (TensorFlow backend)',
        "baseline_s": med["import_keras_tf"],
        "ours_s": med["rebuild_auto"],
        "ratio": med["rebuild_auto"] / med["import_keras_tf"],
        "backend": rep.get("backend"),
        "verified": rep.get("verified"),
        "import_keras_numpy_s": med["import_keras_numpy"],
        "rebuild_tf_s": med["rebuild_tf"],
        "speedup_vs_tf_rebuild": med["rebuild_tf"] / med["rebuild_auto"],
        "goal_s": GOAL_S,
        "goal_ok": med["rebuild_auto"] <= GOAL_S,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"import keras (tensorflow): {out['baseline_s']:.2f} s; (numpy): "
          f"{out['import_keras_numpy_s']:.2f} s")
    print(f"rebuild, backend {out['backend']['backend']} ({out['backend']['why']}): "
          f"{out['ours_s']:.2f} s = {out['ratio']:.2f}x TensorFlow's import keras; "
          f"on TensorFlow: {out['rebuild_tf_s']:.2f} s ({out['speedup_vs_tf_rebuild']:.1f}x "
          f"slower)")
    print(f"goal: rebuild <= {GOAL_S:.0f} s wall: {'PASS' if out['goal_ok'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
