"""Benchmark: `wtransplant inspect FILE` against `h5ls -r FILE` (Debian's hdf5-tools) on a
generated HDF5 file with 20,000 datasets, both measured in the same run.

Both commands print the whole tree (to /dev/null); each is run REPEAT times alternately and
the median wall time is compared. Goals (issue 15): inspect within 1.5x of h5ls at 20,000
datasets, and within 0.15 s wall on a 100-dataset file. Also measured at each size: Python
importing h5py (the start-up floor of any h5py-based tool) and HDF5's own open/close of
every object; ``--sizes`` gives the curve of each against the number of datasets.

    .venv/bin/python bench/bench_inspect.py [--datasets 20000] [--repeat 7]
        [--sizes 100,2000,20000,200000]
    .venv/bin/python bench/bench_inspect.py --decide [--sizes 100,2000,5000,20000,200000]

``--decide`` repeats the measurement that keeps ``wtransplant/reading/_fasth5.py``: the
in-process walk of each file through h5py's public low-level API and through the ctypes
probe, interleaved, the same tree from both (asserted), against HDF5's open/close floor;
the walk through the library without h5py (``reading/h5lean.py``), timed inside a fresh
interpreter (it never runs once h5py is imported); and the metadata read in pure Python
(``reading/h5parse.py``, which inspect tries first; the same tree, asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np


def make_file(path: Path, n: int) -> None:
    per_group = min(100, n)
    with h5py.File(path, "w") as f:
        for g in range(max(1, n // per_group)):
            grp = f.create_group(f"block{g}")
            grp.attrs["index"] = g
            for j in range(per_group):
                grp.create_dataset(f"layer{j}.weight", data=np.full((4, 3), j, np.float32))


def hdf5_open_close_floor(path: Path) -> float | None:
    """Seconds h5py's own HDF5 library needs just to open and close every object of the
    file (no Python objects, no output): the floor for any tool built on that library."""
    from wtransplant.reading._fasth5 import _load

    lib = _load()
    if lib is None:
        return None
    names: list[bytes] = []
    with h5py.File(path, "r", rdcc_nbytes=0, rdcc_nslots=1) as f:
        f.id.links.visit(lambda n: names.append(n))
        fid = f.id.id
        t = time.perf_counter()
        for n in names:
            oid = lib.Oopen(fid, n, 0)
            lib.Oclose(oid)
        return time.perf_counter() - t


#: both commands run as a user's shell would run them: with Python's bytecode caches
#: (a sandbox or CI setting PYTHONDONTWRITEBYTECODE=1 would make every run of ours
#: recompile the package from source, which users do not pay)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def time_cmd(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=ENV)
    return time.perf_counter() - t


def measure(path: Path, repeat: int, h5ls: str | None) -> dict:
    """Median wall times on one file: `h5ls -r`, `wtransplant inspect`, Python importing
    h5py (the start-up floor of any tool built on it) and HDF5's own open/close of every
    object (in process, no start-up), each run alternately REPEAT times."""
    wt = str(Path(sys.executable).parent / "wtransplant")
    base_cmd = [h5ls, "-r", str(path)] if h5ls else None
    our_cmd = [wt, "inspect", str(path)]
    imp_cmd = [sys.executable, "-c", "import h5py"]
    # warm the page cache (and Python's bytecode cache) once for each
    for c in (base_cmd, our_cmd, imp_cmd):
        if c:
            time_cmd(c)
    ours, base, floor, imp = [], [], [], []
    for _ in range(repeat):
        if base_cmd:
            base.append(time_cmd(base_cmd))
        ours.append(time_cmd(our_cmd))
        imp.append(time_cmd(imp_cmd))
        f = hdf5_open_close_floor(path)
        if f is not None:
            floor.append(f)
    med = statistics.median
    out = {"baseline_s": med(base) if base else None, "ours_s": med(ours),
           "import_h5py_s": med(imp), "hdf5_open_close_s": med(floor) if floor else None}
    out["ratio"] = out["ours_s"] / out["baseline_s"] if base else None
    out["ratio_to_import_plus_floor"] = out["ours_s"] / (out["import_h5py_s"] + (
        out["hdf5_open_close_s"] or 0.0))
    return out


#: the h5py-free walk of one file, timed inside a fresh interpreter (start-up excluded,
#: loading the HDF5 library included)
LEAN_TIMER = """
import os, sys, time
t = time.perf_counter()
from wtransplant.reading.h5lean import walk_lean
tree = walk_lean(sys.argv[1], sys.argv[1], file_size=os.path.getsize(sys.argv[1]),
                 head=b"", in_memory=True)
assert tree is not None and "h5py" not in sys.modules
print(time.perf_counter() - t)
"""


def lean_walk_s(path: Path) -> float:
    r = subprocess.run([sys.executable, "-c", LEAN_TIMER, str(path)], capture_output=True,
                       text=True, check=True, env=ENV)
    return float(r.stdout)


def parsed_walk(path: Path) -> tuple[float, dict]:
    """Seconds of the pure-Python metadata read (no library, no h5py calls), and its tree."""
    from wtransplant.reading.h5parse import walk_parsed

    t = time.perf_counter()
    tree = walk_parsed(str(path), str(path), file_size=path.stat().st_size)
    took = time.perf_counter() - t
    assert tree is not None, "the parsed walk stepped aside"
    return took, tree.to_dict()


def decide(sizes: list[int], repeat: int) -> list[dict]:
    """Walk time of h5py's public API path vs the ctypes probe (see ``--decide``)."""
    from wtransplant.reading import _fasth5, tree
    from wtransplant.reading.h5io import open_source

    def walk(path, fast: bool):
        _fasth5._lib, _fasth5._failed = None, not fast
        min_ = _fasth5.FAST_MIN
        _fasth5.FAST_MIN = 0 if fast else 1 << 62
        try:
            t = time.perf_counter()
            with open_source(path, in_memory=True) as src:
                d = tree.walk(src).to_dict()
            return time.perf_counter() - t, d
        finally:
            _fasth5.FAST_MIN = min_
            _fasth5._lib, _fasth5._failed = None, False

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            path = Path(d) / f"many_{n}.h5"
            make_file(path, n)
            res = {"h5py": [], "ctypes": [], "lean": [], "parsed": [], "floor": []}
            walk(path, True)
            walk(path, False)
            for _ in range(repeat if n <= 20000 else 1):
                a, ta = walk(path, False)
                b, tb = walk(path, True)
                assert ta == tb, "the two walks disagree"
                res["h5py"].append(a)
                res["ctypes"].append(b)
                res["lean"].append(lean_walk_s(path))
                c, tc = parsed_walk(path)
                assert tc == ta, "the parsed tree differs"
                res["parsed"].append(c)
                res["floor"].append(hdf5_open_close_floor(path) or float("nan"))
            path.unlink()
            med = {k: statistics.median(v) for k, v in res.items()}
            row = {"datasets": n, **{f"{k}_s": v for k, v in med.items()},
                   "ratio_ctypes_over_h5py": med["ctypes"] / med["h5py"],
                   "ratio_lean_over_h5py": med["lean"] / med["h5py"],
                   "ratio_parsed_over_h5py": med["parsed"] / med["h5py"]}
            rows.append(row)
            print(f"  {n:>7d} datasets: h5py API {med['h5py']:.3f} s, ctypes probe "
                  f"{med['ctypes']:.3f} s ({row['ratio_ctypes_over_h5py']:.2f}x), without "
                  f"h5py {med['lean']:.3f} s ({row['ratio_lean_over_h5py']:.2f}x), parsed "
                  f"in Python {med['parsed']:.3f} s ({row['ratio_parsed_over_h5py']:.2f}x), HDF5 "
                  f"open/close floor {med['floor']:.3f} s", file=sys.stderr)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--sizes", default="",
                    help="also measure these numbers of datasets (e.g. 100,2000,20000,200000)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--decide", action="store_true",
                    help="compare the walk through h5py's API with the ctypes probe")
    args = ap.parse_args(argv)
    if args.decide:
        sizes = [int(x) for x in (args.sizes or "100,2000,5000,20000,200000").split(",")]
        rows = decide(sizes, args.repeat)
        if args.json:
            print(json.dumps(rows))
        return {"decide": rows}
    h5ls = shutil.which("h5ls")
    sizes = sorted({args.datasets, *(int(x) for x in args.sizes.split(",") if x)})
    scaling = []
    with tempfile.TemporaryDirectory() as d:
        for n in sizes:
            path = Path(d) / f"many_{n}.h5"
            make_file(path, n)
            # fewer repeats where one run takes many seconds
            rep = args.repeat if n <= 20000 else 1
            m = measure(path, rep, h5ls)
            m["datasets"] = n
            scaling.append(m)
            path.unlink()
            if not args.json:
                print(f"  {n:>7d} datasets: inspect {m['ours_s']:.3f} s, h5ls -r "
                      f"{(m['baseline_s'] or float('nan')):.3f} s "
                      f"({(m['ratio'] or float('nan')):.2f}x), python -c 'import h5py' "
                      f"{m['import_h5py_s']:.3f} s, HDF5 open/close floor "
                      f"{(m['hdf5_open_close_s'] or float('nan')):.3f} s", file=sys.stderr)
    main_row = next(m for m in scaling if m["datasets"] == args.datasets)
    res = {
        "task": f"inspect, {args.datasets} datasets",
        "baseline": "h5ls -r" if h5ls else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "hdf5_version": h5py.version.hdf5_version,
        **main_row,
        "scaling": scaling,
    }
    if args.json:
        print(json.dumps(res))
    elif not res["baseline_s"]:
        print(f"h5ls not found (apt-get install hdf5-tools); inspect alone: "
              f"{res['ours_s']:.3f} s")
    else:
        print(f"{res['task']}: wtransplant inspect {res['ours_s']:.3f} s, h5ls -r "
              f"{res['baseline_s']:.3f} s, ratio {res['ratio']:.2f}x (goal <= 1.5x)")
        if res["hdf5_open_close_s"] is not None:
            print(f"  HDF5 {res['hdf5_version']} (h5py's) alone, opening and closing every "
                  f"object: {res['hdf5_open_close_s']:.3f} s "
                  f"({res['hdf5_open_close_s'] / res['baseline_s']:.2f}x h5ls's whole run)")
    return res


if __name__ == "__main__":
    main()
