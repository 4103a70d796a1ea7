"""Benchmark: `wtransplant inspect FILE` against `h5ls -r FILE` (Debian's hdf5-tools) on a
generated HDF5 file with 20,000 datasets, both measured in the same run.

Both commands print the whole tree (to /dev/null); each is run REPEAT times alternately and
the median wall time is compared. Goal: inspect within 2x of h5ls.

    .venv/bin/python bench/bench_inspect.py [--datasets 20000] [--repeat 7]
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
    per_group = 100
    with h5py.File(path, "w") as f:
        for g in range(max(1, n // per_group)):
            grp = f.create_group(f"block{g}")
            grp.attrs["index"] = g
            for j in range(per_group):
                grp.create_dataset(f"layer{j}.weight", data=np.full((4, 3), j, np.float32))


def hdf5_open_close_floor(path: Path) -> float | None:
    """Seconds h5py's own HDF5 library needs just to open and close every object of the
    file (no Python objects, no output): the floor for any tool built on that library."""
    from wtransplant._fasth5 import _load

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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    h5ls = shutil.which("h5ls")
    wt = str(Path(sys.executable).parent / "wtransplant")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "many.h5"
        make_file(path, args.datasets)
        base_cmd = [h5ls, "-r", str(path)] if h5ls else None
        our_cmd = [wt, "inspect", str(path)]
        # warm the page cache (and Python's bytecode cache) once for both
        if base_cmd:
            time_cmd(base_cmd)
        time_cmd(our_cmd)
        ours, base, floor = [], [], []
        for _ in range(args.repeat):
            if base_cmd:
                base.append(time_cmd(base_cmd))
            ours.append(time_cmd(our_cmd))
            f = hdf5_open_close_floor(path)
            if f is not None:
                floor.append(f)
    res = {
        "task": f"inspect, {args.datasets} datasets",
        "baseline": "h5ls -r" if h5ls else None,
        "baseline_s": statistics.median(base) if base else None,
        "ours_s": statistics.median(ours),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "hdf5_open_close_s": statistics.median(floor) if floor else None,
        "hdf5_version": h5py.version.hdf5_version,
    }
    res["ratio"] = res["ours_s"] / res["baseline_s"] if base else None
    if args.json:
        print(json.dumps(res))
    elif not base:
        print(f"h5ls not found (apt-get install hdf5-tools); inspect alone: "
              f"{res['ours_s']:.3f} s")
    else:
        print(f"{res['task']}: wtransplant inspect {res['ours_s']:.3f} s, h5ls -r "
              f"{res['baseline_s']:.3f} s, ratio {res['ratio']:.2f}x (goal <= 2x)")
        if res["hdf5_open_close_s"] is not None:
            print(f"  HDF5 {res['hdf5_version']} (h5py's) alone, opening and closing every "
                  f"object: {res['hdf5_open_close_s']:.3f} s "
                  f"({res['hdf5_open_close_s'] / res['baseline_s']:.2f}x h5ls's whole run)")
    return res


if __name__ == "__main__":
    main()
