"""Benchmark: rebuilding a VGG16-size model (138 million parameters, random values, written
as a Keras 2 weights H5) with wtransplant, against Keras 3's own `model.load_weights` of the
same file, in the same run.

Each side runs in a fresh process: build `keras.applications.VGG16(weights=None)`, then load
the weights (Keras: `load_weights`; wtransplant: `transplant` with a spec naming the file,
with and without per-tensor checksums). Reported: wall time of the weight loading, peak RSS
of the process, and the framework's baseline RSS (Keras imported, model built, no weights
loaded). Goals (issue 15): time <= 0.7x Keras' `load_weights`; peak RSS over the baseline
<= 1.2x the model's bytes (one copy of each tensor in flight: read, convert, assign, drop).
Each goal line prints PASS or FAIL.

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


def mlp_layers(width: int, depth: int = 4) -> list:
    """(name, kernel shape) of the scaling benchmark's MLP: DEPTH Dense(width) layers on a
    width-wide input (about depth * width**2 parameters)."""
    return [(f"dense_{i}", (width, width)) for i in range(depth)]


def mlp_width(params: float, depth: int = 4) -> int:
    return max(8, int(round((params / depth) ** 0.5)))


def write_keras2_weights(path: Path, layers=None) -> int:
    """A Keras 2 `save_weights` H5 layout (layer_names / weight_names / `name:0` datasets)
    with random values; returns the number of parameters."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    n = 0
    vgg = layers is None
    layers = VGG16_LAYERS if vgg else layers
    with h5py.File(path, "w") as f:
        if vgg:
            f.attrs["layer_names"] = [b"input_1"] + [k.encode() for k, _ in layers[:2]] + \
                [b"block1_pool"] + [k.encode() for k, _ in layers[2:]]
            f.create_group("input_1").attrs["weight_names"] = []
            f.create_group("block1_pool").attrs["weight_names"] = []
        else:
            f.attrs["layer_names"] = [k.encode() for k, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for name, shape in layers:
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            sub = g.create_group(name)
            fan_in = int(np.prod(shape[:-1]))
            # float32 on disk, as Keras 2 writes it (NumPy 2 would promote a float32 array
            # divided by a float64 scalar to float64 and double the file)
            k = rng.standard_normal(shape, dtype=np.float32)
            k *= np.float32(1 / np.sqrt(fan_in))
            sub.create_dataset("kernel:0", data=k, dtype=np.float32)
            del k
            sub.create_dataset("bias:0", data=rng.standard_normal(shape[-1:], dtype=np.float32)
                               * np.float32(0.1), dtype=np.float32)
            n += int(np.prod(shape)) + shape[-1]
    return n


def build(arch: str):
    import keras

    if arch == "vgg16":
        return keras.applications.VGG16(weights=None)
    width = int(arch.split(":")[1])
    return keras.Sequential([keras.Input((width,))] + [
        keras.layers.Dense(shape[1], name=name) for name, shape in mlp_layers(width)])


def child(mode: str, path: str, arch: str = "vgg16") -> dict:
    import numpy as np

    out = {"mode": mode}
    t = time.perf_counter()
    model = build(arch)
    out["build_s"] = time.perf_counter() - t
    out["baseline_rss_mb"] = rss_mb()
    t, c = time.perf_counter(), cpu_s()
    if mode == "keras":
        model.load_weights(path)
    elif mode in ("wtransplant", "wtransplant-nochecksums"):
        from wtransplant.building.transplanting import transplant
        from wtransplant.planning.spec import load_spec

        spec = load_spec(text=f"version: 1\nsource: {path}\nconvention: keras\n")
        transplant(model, spec, progress=False, checksums=mode == "wtransplant")
    out["load_s"] = time.perf_counter() - t
    out["load_cpu_s"] = cpu_s() - c
    out["peak_rss_mb"] = rss_mb()
    w = model.get_layer("fc1" if arch == "vgg16" else "dense_0").get_weights()[0]
    out["fc1_checksum"] = float(np.asarray(w[:4, :4], np.float64).sum())
    return out


def cpu_s() -> float:
    """CPU seconds of this process, all threads, user and system: on a shared machine a
    steadier measure of the work done than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_child(mode: str, path: Path, arch: str = "vgg16") -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(path), arch],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


#: goals of issue 15 (ratios against Keras' load_weights / the model's bytes, same run)
GOAL_TIME = 0.7
GOAL_MEM = 1.2
SCALING_PARAMS = (1e6, 1e7, 1e8)


def scaling(sizes, dirpath: Path) -> list[dict]:
    """Rebuild time and peak memory vs parameters: an MLP of ~each size, Keras'
    load_weights and wtransplant (with checksums) each in a fresh process."""
    rows = []
    for p in sizes:
        width = mlp_width(p)
        path = dirpath / f"mlp_{width}.h5"
        n = write_keras2_weights(path, mlp_layers(width))
        row = {"parameters": n, "model_mib": n * 4 / 2**20, "width": width}
        for mode in ("keras", "wtransplant"):
            r = run_child(mode, path, f"mlp:{width}")
            row[mode] = {"load_s": r["load_s"],
                         "peak_over_baseline_mib": r["peak_rss_mb"] - r["baseline_rss_mb"]}
        row["time_ratio"] = row["wtransplant"]["load_s"] / row["keras"]["load_s"]
        row["memory_ratio_to_model"] = row["wtransplant"]["peak_over_baseline_mib"] / \
            row["model_mib"]
        print(f"  {n / 1e6:7.1f} M params: wtransplant {row['wtransplant']['load_s']:.2f} s "
              f"({row['time_ratio']:.2f}x Keras load_weights {row['keras']['load_s']:.2f} s), "
              f"peak over baseline +{row['wtransplant']['peak_over_baseline_mib']:.0f} MiB "
              f"({row['memory_ratio_to_model']:.2f}x model bytes; Keras "
              f"+{row['keras']['peak_over_baseline_mib']:.0f} MiB)", file=sys.stderr)
        path.unlink()
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", nargs="+", metavar="MODE FILE [ARCH]", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--scaling", default=None, metavar="P1,P2,...",
                    help="also rebuild MLPs of these parameter counts (e.g. 1e6,1e7,1e8)")
    ap.add_argument("--no-vgg", action="store_true", help="skip the VGG16-size run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return {}
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                            f"Python {platform.python_version()}",
                 "goals": {"time_ratio_max": GOAL_TIME, "memory_over_model_max": GOAL_MEM}}
    with tempfile.TemporaryDirectory() as d:
        if not args.no_vgg:
            path = Path(d) / "vgg16_keras2.h5"  # not *.weights.h5: Keras 3 would read it as its own format
            n = write_keras2_weights(path)
            model_mb = n * 4 / 2**20
            runs: dict[str, list[dict]] = {}
            for _ in range(args.repeat):
                for mode in ("keras", "wtransplant", "wtransplant-nochecksums"):
                    runs.setdefault(mode, []).append(run_child(mode, path))
            path.unlink()
            vgg(res, runs, n, model_mb)
        if args.scaling:
            sizes = [float(x) for x in args.scaling.split(",")]
            res["scaling"] = scaling(sizes, Path(d))
    if args.json:
        print(json.dumps(res, indent=2))
        return res
    if "runs" in res:
        k, model_mb = res["runs"]["keras"], res["model_mib"]
        print(res["task"])
        print(f"  Keras load_weights:          {k['load_s']:.2f} s, peak RSS "
              f"{k['peak_rss_mb']:.0f} MiB (baseline {k['baseline_rss_mb']:.0f} MiB: "
              f"+{k['peak_rss_mb'] - k['baseline_rss_mb']:.0f}), CPU {k['load_cpu_s']:.2f} s")
        for m in ("wtransplant", "wtransplant-nochecksums"):
            b = res["runs"][m]
            print(f"  {m + ':':28s} {b['load_s']:.2f} s ({res[m]['time_ratio_vs_keras']:.2f}x "
                  f"Keras), peak RSS {b['peak_rss_mb']:.0f} MiB (baseline "
                  f"{b['baseline_rss_mb']:.0f} MiB: +{res[m]['peak_over_baseline_mib']:.0f} = "
                  f"{res[m]['memory_ratio_to_model']:.2f}x the model's {model_mb:.0f} MiB), "
                  f"CPU {b['load_cpu_s']:.2f} s ({res[m]['cpu_ratio_vs_keras']:.2f}x)")
        g = res["wtransplant"]
        print(f"  goal time <= {GOAL_TIME}x load_weights: {g['time_ratio_vs_keras']:.2f}x "
              f"{'PASS' if g['time_ok'] else 'FAIL'}")
        print(f"  goal peak RSS over baseline <= {GOAL_MEM}x model bytes: "
              f"{g['memory_ratio_to_model']:.2f}x {'PASS' if g['memory_ok'] else 'FAIL'}")
    return res


def vgg(res: dict, runs: dict, n: int, model_mb: float) -> None:
    best = {m: min(rs, key=lambda r: r["load_s"]) for m, rs in runs.items()}
    k = best["keras"]
    assert all(abs(b["fc1_checksum"] - k["fc1_checksum"]) < 1e-6 for b in best.values()), \
        "the two loaders disagree on the weights"
    res.update({"task": f"rebuild VGG16-size model ({n / 1e6:.1f} M parameters, "
                        f"{model_mb:.0f} MiB float32) from a Keras 2 weights H5",
                "parameters": n, "model_mib": model_mb, "runs": best})
    for m in ("wtransplant", "wtransplant-nochecksums"):
        b = best[m]
        over = b["peak_rss_mb"] - b["baseline_rss_mb"]
        res[m] = {"time_ratio_vs_keras": b["load_s"] / k["load_s"],
                  "cpu_ratio_vs_keras": b["load_cpu_s"] / k["load_cpu_s"],
                  "peak_over_baseline_mib": over,
                  "memory_ratio_to_model": over / model_mb,
                  "keras_peak_over_baseline_mib": k["peak_rss_mb"] - k["baseline_rss_mb"]}
        res[m]["time_ok"] = res[m]["time_ratio_vs_keras"] <= GOAL_TIME
        res[m]["memory_ok"] = res[m]["memory_ratio_to_model"] <= GOAL_MEM


if __name__ == "__main__":
    main()
