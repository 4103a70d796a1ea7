"""Benchmark: inference latency of the exported ONNX model in onnxruntime against Keras'
own `predict_on_batch` on the same batch, same run (median of repeated runs).

    .venv/bin/python bench/bench_onnx.py [--batch 64] [--repeat 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]


def _median(fn, repeat: int) -> float:
    fn()
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import numpy as np

    from wtransplant.building.transplanting import rebuild
    from wtransplant.exporting.export import export_model
    from wtransplant.runtimes import load_artifact

    results = []
    with tempfile.TemporaryDirectory() as d:
        for name, shape in (("torch_cnn", (16, 16, 3)), ("torch_lstm", (5, 6))):
            model, _ = rebuild(ROOT / f"fixtures/specs/{name}.yaml", progress=False)
            onnx_path = Path(d) / f"{name}.onnx"
            export_model(model, "onnx", onnx_path, progress=False)
            art = load_artifact(onnx_path)
            x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype("f4")
            keras_s = _median(lambda m=model, x=x: m.predict_on_batch(x), args.repeat)
            ort_s = _median(lambda a=art, x=x: a.predict([x]), args.repeat)
            results.append({"task": f"ONNX latency, {name}, batch {args.batch}",
                            "baseline": "Keras predict_on_batch", "baseline_s": keras_s,
                            "ours_s": ort_s, "ratio": ort_s / keras_s,
                            "machine": f"{platform.machine()}, {os.cpu_count()} cores"})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{r['task']}: Keras {r['baseline_s'] * 1e3:.2f} ms, onnxruntime "
                  f"{r['ours_s'] * 1e3:.2f} ms, ratio {r['ratio']:.2f}x")
    return {"results": results}


if __name__ == "__main__":
    main()
