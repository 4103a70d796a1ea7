"""Benchmark: rebuilding a VGG16-size model (138 million parameters, random values, written
as a Keras 2 weights H5) with wtransplant, against Keras 3's own `model.load_weights` of the
same file, in the same run.

Each side runs in a fresh process: build `keras.applications.VGG16(weights=None)`, then load
the weights (Keras: `load_weights`; wtransplant: `transplant` with a spec naming the file,
with and without per-tensor checksums). Reported: wall time of the weight loading, peak RSS
of the process, and the framework's baseline RSS (Keras imported, model built, no weights
loaded). Goals: no slower than Keras; peak RSS no more than the baseline plus model bytes
plus a small constant.

    .venv/bin/python bench/bench_rebuild.py [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VGG16_LAYERS = [  # (name, kernel shape) of keras.applications.VGG16 with its top
    ("block1_conv1", (3, 3, 3, 64)), ("block1_conv2", (3, 3, 64, 64)),
    ("block2_conv1", (3, 3, 64, 128)), ("block2_conv2", (3, 3, 128, 128)),
    ("block3_conv1", (3, 3, 128, 256)), ("block3_conv2", (3, 3, 256, 256)),
    ("block3_conv3", (3, 3, 256, 256)),
    ("block4_conv1", (3, 3, 256, 512)), ("block4_conv2", (3, 3, 512, 512)),
    ("block4_conv3", (3, 3, 512, 512)),
    ("block5_conv1", (3, 3, 512, 512)), ("block5_conv2", (3, 3, 512, 512)),
    ("block5_conv3", (3, 3, 512, 512)),
    ("fc1", (25088, 4096)), ("fc2", (4096, 4096)), ("predictions", (4096, 1000)),
]


def write_keras2_weights(path: Path) -> int:
    """A Keras 2 `save_weights` H5 layout (layer_names / weight_names / `name:0` datasets)
    with random values; returns the number of parameters."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    n = 0
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"input_1"] + [k.encode() for k, _ in VGG16_LAYERS[:2]] + \
            [b"block1_pool"] + [k.encode() for k, _ in VGG16_LAYERS[2:]]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        f.create_group("input_1").attrs["weight_names"] = []
        f.create_group("block1_pool").attrs["weight_names"] = []
        for name, shape in VGG16_LAYERS:
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            sub = g.create_group(name)
            fan_in = int(np.prod(shape[:-1]))
            sub.create_dataset("kernel:0", data=(rng.standard_normal(shape, dtype=np.float32)
                                                 / np.sqrt(fan_in)))
            sub.create_dataset("bias:0", data=rng.standard_normal(shape[-1:],
                                                                  dtype=np.float32) * 0.1)
            n += int(np.prod(shape)) + shape[-1]
    return n


def child(mode: str, path: str) -> dict:
    import keras
    import numpy as np

    out = {"mode": mode}
    t = time.perf_counter()
    model = keras.applications.VGG16(weights=None)
    out["build_s"] = time.perf_counter() - t
    out["baseline_rss_mb"] = rss_mb()
    t = time.perf_counter()
    if mode == "keras":
        model.load_weights(path)
    elif mode in ("wtransplant", "wtransplant-nochecksums"):
        from wtransplant.spec import load_spec
        from wtransplant.transplanting import transplant

        spec = load_spec(text=f"version: 1\nsource: {path}\nconvention: keras\n")
        transplant(model, spec, progress=False, checksums=mode == "wtransplant")
    out["load_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = rss_mb()
    w = model.get_layer("fc1").get_weights()[0]
    out["fc1_checksum"] = float(np.asarray(w[:4, :4], np.float64).sum())
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_child(mode: str, path: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vgg16_keras2.h5"  # not *.weights.h5: Keras 3 would read it as its own format
        n = write_keras2_weights(path)
        model_mb = n * 4 / 2**20
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeat):
            for mode in ("keras", "wtransplant", "wtransplant-nochecksums"):
                runs.setdefault(mode, []).append(run_child(mode, path))
    best = {m: min(rs, key=lambda r: r["load_s"]) for m, rs in runs.items()}
    k = best["keras"]
    assert all(abs(b["fc1_checksum"] - k["fc1_checksum"]) < 1e-6 for b in best.values()), \
        "the two loaders disagree on the weights"
    res = {"task": f"rebuild VGG16-size model ({n / 1e6:.1f} M parameters, "
                   f"{model_mb:.0f} MiB float32) from a Keras 2 weights H5",
           "parameters": n, "model_mib": model_mb,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                      f"Python {platform.python_version()}",
           "runs": best}
    for m in ("wtransplant", "wtransplant-nochecksums"):
        b = best[m]
        res[m] = {"time_ratio_vs_keras": b["load_s"] / k["load_s"],
                  "peak_over_baseline_mib": b["peak_rss_mb"] - b["baseline_rss_mb"],
                  "keras_peak_over_baseline_mib": k["peak_rss_mb"] - k["baseline_rss_mb"]}
    if args.json:
        print(json.dumps(res, indent=2))
        return res
    print(res["task"])
    print(f"  Keras load_weights:          {k['load_s']:.2f} s, peak RSS {k['peak_rss_mb']:.0f} "
          f"MiB (baseline {k['baseline_rss_mb']:.0f} MiB: +{k['peak_rss_mb'] - k['baseline_rss_mb']:.0f})")
    for m in ("wtransplant", "wtransplant-nochecksums"):
        b = best[m]
        print(f"  {m + ':':28s} {b['load_s']:.2f} s ({res[m]['time_ratio_vs_keras']:.2f}x "
              f"Keras), peak RSS {b['peak_rss_mb']:.0f} MiB (baseline {b['baseline_rss_mb']:.0f}"
              f" MiB: +{res[m]['peak_over_baseline_mib']:.0f}; model is {model_mb:.0f} MiB)")
    return res


if __name__ == "__main__":
    main()
