"""Benchmark: the cost of `wtransplant.verify` against one forward pass of the same model
on the same batch, in the same run.

verify does the forward pass plus the comparison (max/relative errors, cosine, argmax,
the allclose verdict); the ratio says how much the checking adds. Median of repeated runs,
in-process, model already loaded.

    .venv/bin/python bench/bench_verify.py [--batch 512] [--repeat 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np

    from wtransplant.building.transplanting import predict, rebuild
    from wtransplant.checking.verification import verify

    model, _ = rebuild(ROOT / "fixtures/specs/torch_cnn.yaml", progress=False)
    x = np.random.default_rng(0).standard_normal((args.batch, 16, 16, 3)).astype("float32")
    y = predict(model, x, batch_size=args.batch)
    fwd, ver = [], []
    for _ in range(2):  # warm up both paths
        predict(model, x, batch_size=args.batch)
        verify(model, inputs=x, expected=y)
    for _ in range(args.repeat):
        t = time.perf_counter()
        predict(model, x, batch_size=args.batch)
        fwd.append(time.perf_counter() - t)
        t = time.perf_counter()
        verify(model, inputs=x, expected=y)
        ver.append(time.perf_counter() - t)
    res = {"task": f"verify vs one forward pass (CNN, batch {args.batch})",
           "baseline": "model forward pass", "baseline_s": statistics.median(fwd),
           "ours_s": statistics.median(ver),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    res["ratio"] = res["ours_s"] / res["baseline_s"]
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['task']}: forward {res['baseline_s'] * 1e3:.1f} ms, verify "
              f"{res['ours_s'] * 1e3:.1f} ms, ratio {res['ratio']:.2f}x")
    return res


if __name__ == "__main__":
    main()
