"""Run every benchmark in bench/ and write bench/RESULTS.md (`make bench`).

Each row: the task, the baseline measured in the same run, both figures, the ratio, the
goal, and the machine. Each benchmark runs in its own process with ``--json``.

    .venv/bin/python bench/run_all.py [--quick] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def run(script: str, *args: str) -> dict | list:
    r = subprocess.run([sys.executable, str(HERE / script), "--json", *args],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{r.stderr[-3000:]}")
    out = r.stdout.strip()
    start = min(i for i in (out.find("{"), out.find("[")) if i >= 0)
    return json.loads(out[start:])


def machine() -> str:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu or platform.processor()} ({os.cpu_count()} cores{mem}), " \
           f"{platform.system()} {platform.release()}, Python {platform.python_version()}"


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    args = ap.parse_args(argv)
    q = args.quick
    rows = []

    def row(task, baseline, base, ours, ratio, goal, met):
        rows.append((task, baseline, base, ours, f"{ratio:.2f}x", goal,
                     "yes" if met else "**no**"))
        print(f"{task}: {ours} vs {baseline} {base}: {ratio:.2f}x", file=sys.stderr)

    r = run("bench_inspect.py", "--repeat", "3" if q else "7",
            *(["--datasets", "2000"] if q else []))
    notes = []
    if r.get("baseline_s"):
        row(r["task"], "`h5ls -r` (Debian hdf5-tools)", fmt_s(r["baseline_s"]),
            fmt_s(r["ours_s"]), r["ratio"], "<= 2x", r["ratio"] <= 2)
        if r.get("hdf5_open_close_s"):
            notes.append(
                f"inspect: HDF5 {r['hdf5_version']} (the library h5py bundles) spends "
                f"{fmt_s(r['hdf5_open_close_s'])} just opening and closing the file's "
                f"{r['task'].split(', ')[1]} ({r['hdf5_open_close_s'] / r['baseline_s']:.2f}x "
                f"h5ls's whole run, which uses Debian's HDF5 1.10); the rest is Python start-up, "
                f"reading shapes and types, format detection, hints and printing.")
    else:
        rows.append((r["task"], "h5ls not installed", "", fmt_s(r["ours_s"]), "", "", ""))

    if not q:
        r = run("bench_rebuild.py")
        k, w = r["runs"]["keras"], r["runs"]["wtransplant"]
        row("rebuild VGG16-size (138.4 M params) from a Keras 2 weights H5: time",
            "Keras 3 `model.load_weights`", fmt_s(k["load_s"]), fmt_s(w["load_s"]),
            w["load_s"] / k["load_s"], "<= 1x", w["load_s"] <= k["load_s"] * 1.0)
        over = r["wtransplant"]["peak_over_baseline_mib"]
        kover = r["wtransplant"]["keras_peak_over_baseline_mib"]
        row(f"same: peak RSS over the framework baseline (model {r['model_mib']:.0f} MiB)",
            "Keras 3 `model.load_weights`", f"+{kover:.0f} MiB", f"+{over:.0f} MiB",
            over / kover, "<= model bytes + small constant", over <= r["model_mib"] + 64)

    r = run("bench_verify.py", *(["--repeat", "5"] if q else []))
    row(r["task"], r["baseline"], fmt_s(r["baseline_s"]), fmt_s(r["ours_s"]), r["ratio"],
        "small overhead (<= 1.5x)", r["ratio"] <= 1.5)

    for r in run("bench_onnx.py", *(["--repeat", "10"] if q else [])):
        row(r["task"], r["baseline"], fmt_s(r["baseline_s"]), fmt_s(r["ours_s"]), r["ratio"],
            "faster than Keras (< 1x)", r["ratio"] < 1)

    fa = ["--base", "4000", "--rounds", "2", "--epochs", "2"] if q else []
    r = run("bench_finetune.py", *fa)
    thr = r["throughput_samples_per_s"]
    row(f"fine-tuning throughput, HDF5-streamed ({r['base_samples']} samples, batch "
        f"{r['batch_size']})", "`model.fit` on in-memory arrays",
        f"{thr['memory']:.0f} samples/s", f"{thr['stream']:.0f} samples/s",
        r["throughput_ratio_stream_over_memory"], ">= 0.9x",
        r["throughput_ratio_stream_over_memory"] >= 0.9)
    g = r["rss_growth_mib"]
    row(f"fine-tuning peak RSS growth as data grow {r['grow']}x "
        f"(+{r['data_growth_mib']:.0f} MiB on disk)", "in-memory `model.fit`",
        f"+{g['memory']:.0f} MiB", f"+{g['stream']:.0f} MiB",
        (g["stream"] / g["memory"]) if g["memory"] else 0.0, "flat (< 10% of data growth)",
        g["stream"] < 0.1 * r["data_growth_mib"])

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run_all.py{' --quick' if q else ''}) on "
        f"{datetime.date.today().isoformat()}, commit {commit or '?'}.",
        "",
        f"Machine: {machine()}.",
        "",
        "Every figure is measured in the same run as its baseline, on the same machine; "
        "ratios are ours / baseline (lower is better for times and memory, higher for "
        "throughput). Timings on a shared machine vary by tens of percent between runs.",
        "",
        "| task | baseline | baseline figure | ours | ratio | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r_) + " |" for r_ in rows]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Scripts: `bench/bench_inspect.py`, `bench/bench_rebuild.py`, "
              "`bench/bench_verify.py`, `bench/bench_onnx.py`, `bench/bench_finetune.py`; "
              "each prints its own details without `--json`.", ""]
    from wtransplant.atomic import atomic_path

    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
