"""Differential fuzzing of the h5py-free walk (reading/h5lean.py) against the h5py walk.

Contract of ``walk_lean``: for any file it returns exactly the tree the h5py walk gives
(``FileTree.to_dict()``, comment and userblock) or None. Two kinds of case:

* ``gen``: a random well-formed file written with h5py (every dtype h5py writes, both byte
  orders, strings fixed/vlen ascii/utf-8, references, compounds, enums, chunked/compressed/
  compact/empty datasets, attributes of all of these, track_order, aliases, userblocks,
  soft/external links, comments);
* ``mut``: a small fixture or a generated file with bytes mutated (mostly its metadata).

Each file goes through two long-lived worker processes: one that never imports h5py or
NumPy (the lean walk, under a memory ceiling, checking after every case that no HDF5 id
is left open), one that runs the h5py walk. The parent kills and restarts a worker that
outlives the time limit. Findings: a different tree; a tree for a file the h5py walk
rejects; the lean worker crashing, hanging or running out of memory where h5py does not;
an HDF5 id left open.

    python tests/leanfuzz.py --gen 2000 --mut 2000 --seed 1   # a campaign
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzing import mutate, mutation_plan  # noqa: E402

FIX = ROOT / "fixtures"
CASE_SECONDS = 20
LEAN_MEMORY = 1 << 30  # the lean worker's address space above its start-up footprint
MUT_SEEDS = sorted(str(p.relative_to(FIX)) for p in FIX.rglob("*")
                   if p.suffix in (".h5", ".mat", ".hdf5") and p.is_file()
                   and 1000 < p.stat().st_size <= 60_000)

# --------------------------------------------------------------------------------------
# workers: one JSON line in (a path), one JSON line out

LEAN_WORKER = r"""
import ctypes, json, os, resource, sys
from wtransplant.errors import InputError
from wtransplant.reading import h5lean
from wtransplant.reading.h5io import check_readable_file
lib = h5lean.library()
assert lib is not None, "no lean library"
cdll = ctypes.CDLL(h5lean.library_path(), mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
count = cdll.H5Fget_obj_count
count.restype, count.argtypes = ctypes.c_ssize_t, [ctypes.c_int64, ctypes.c_uint]
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/statm") as fh:
    vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), hard))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    f, in_memory = json.loads(line)
    with open(f, "rb") as fh:
        head = fh.read(1024)
    try:
        check_readable_file(f)  # as the command line does first (polyglots: refused)
    except InputError:
        print(json.dumps({"result": None, "open_ids": 0, "imported": []}), flush=True)
        continue
    try:
        t = h5lean.walk_lean(f, f, file_size=os.path.getsize(f), head=head,
                             in_memory=in_memory)
        res = None if t is None else {"tree": t.to_dict(), "comment": t.comment,
                                      "userblock": t.userblock.hex()}
        out = {"result": res}
    except MemoryError:
        out = {"crash": "MemoryError"}
    except BaseException as e:
        out = {"crash": f"{type(e).__name__}: {e}"[:300]}
    out["open_ids"] = count(0x1F, 0x1F)
    out["imported"] = sorted(m for m in ("numpy", "h5py") if m in sys.modules)
    print(json.dumps(out), flush=True)
"""

H5PY_WORKER = r"""
import json, sys
from wtransplant.errors import InputError
from wtransplant.reading.h5io import open_source
from wtransplant.reading.tree import walk
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    f, _ = json.loads(line)
    try:
        src = open_source(f, in_memory=True)
    except InputError:
        print(json.dumps({"result": "refused"}), flush=True)
        continue
    try:
        with src:
            t = walk(src)
        res = {"tree": t.to_dict(), "comment": t.comment, "userblock": t.userblock.hex()}
    except InputError as e:
        res = "error: " + str(e)[:200]
    except BaseException as e:
        res = f"crash: {type(e).__name__}: {e}"[:300]
    print(json.dumps({"result": res}), flush=True)
"""


class Worker:
    """A long-lived interpreter running ``code``; :meth:`ask` sends one path."""

    def __init__(self, code: str, args=(), env=None):
        self.code, self.args, self.env = code, list(args), env
        self.p = None
        self.cases = 0

    def start(self):
        self.p = subprocess.Popen([sys.executable, "-c", self.code, *self.args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=self.env,
                                  cwd=ROOT)
        ready = self._line(120)
        if not ready or not json.loads(ready).get("ready"):
            raise RuntimeError("worker did not start")

    def _line(self, timeout: float) -> str | None:
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        return self.p.stdout.readline() if r else None

    def ask(self, path: str, in_memory: bool = True) -> dict:
        if self.p is None or self.p.poll() is not None:
            self.start()
        self.cases += 1
        try:
            self.p.stdin.write(json.dumps([path, in_memory]) + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._line(CASE_SECONDS)
        if line:
            return json.loads(line)
        if line is None:  # timed out: a hang
            self.kill()
            return {"hang": True}
        rc = self.p.wait(10)
        self.p = None
        return {"died": rc}

    def kill(self):
        if self.p is not None:
            self.p.kill()
            self.p.wait(10)
            self.p = None

    def close(self):
        if self.p is not None and self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.p = None


def lean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WTRANSPLANT_NO_FASTH5"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def compare(lean: dict, ref: dict) -> str | None:
    """The finding for one file, or None."""
    if lean.get("imported"):
        return f"lean worker imported {lean['imported']}"
    if lean.get("open_ids"):
        return f"{lean['open_ids']} HDF5 ids left open"
    r = ref.get("result")
    h5py_ok = isinstance(r, dict) or (isinstance(r, str) and not r.startswith("crash"))
    if "hang" in lean or "died" in lean or "crash" in lean:
        what = ("hang" if "hang" in lean else f"died rc={lean.get('died')}" if "died" in lean
                else lean["crash"])
        return f"lean {what} (h5py: {_short(ref)})" if h5py_ok else None
    got = lean["result"]
    if got is None:
        return None
    if r == "refused" or (isinstance(r, str) and r.startswith("error")):
        return f"lean gives a tree, h5py: {r}"
    if not isinstance(r, dict):
        return f"lean gives a tree, h5py: {_short(ref)}"
    a, b = json.dumps(got), json.dumps(r)  # strings: NaN equals NaN, order counts
    return None if a == b else "different tree: " + _first_difference(got, r)


def _short(ref: dict) -> str:
    r = ref.get("result")
    return "tree" if isinstance(r, dict) else str(r or ref)[:120]


def _first_difference(a, b, where="") -> str:
    if type(a) is not type(b):
        return f"{where}: {str(a)[:150]!r} vs {str(b)[:150]!r}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)[:8]} vs {list(b)[:8]}"
        for k in a:
            if json.dumps(a[k]) != json.dumps(b[k]):
                return _first_difference(a[k], b[k], f"{where}/{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items vs {len(b)}: {str(a)[:150]} vs {str(b)[:150]}"
        for i, (x, y) in enumerate(zip(a, b)):
            if json.dumps(x) != json.dumps(y):
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where}: {str(a)[:150]!r} vs {str(b)[:150]!r}"


# --------------------------------------------------------------------------------------
# generated files (h5py and NumPy are imported here, in the parent, only)

NAME_CHARS = "abcxyz_019 -+.:\u00e9\u4e2d\U0001f600\t#%&[]"


def _name(rng: random.Random) -> str:
    n = "".join(rng.choice(NAME_CHARS) for _ in range(rng.randint(1, 8)))
    return n if n not in (".", "..") else n + "x"


def _numeric_dtypes():
    out = []
    for kind, sizes in (("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8)), ("f", (2, 4, 8))):
        for s in sizes:
            out += [f"<{kind}{s}", f">{kind}{s}"]
    return out + ["<c8", ">c16", "<c16", "?", "<g"]


def _shape(rng: random.Random, big: bool = False):
    r = rng.random()
    if r < 0.25:
        return ()
    if r < 0.35:
        return tuple(rng.choice([0, 1, 3]) for _ in range(rng.randint(1, 3)))
    hi = 300 if big else 6
    return tuple(rng.randint(1, hi if i == 0 else 6) for i in range(rng.randint(1, 3)))


def _value(rng, np, h5py, f, kind: str, shape, big=False):
    """(data, dtype) for an attribute or dataset of ``kind``."""
    n = int(np.prod(shape)) if shape else 1
    if kind in ("num", "plainnum"):
        pool = _numeric_dtypes()
        dt = np.dtype(rng.choice(pool[:-5] if kind == "plainnum" else pool))
        if dt.kind == "b":
            data = np.array([rng.random() < 0.5 for _ in range(n)], dt)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            data = np.array([rng.choice([info.min, info.max, 0, 1, rng.randint(info.min,
                                                                              info.max)])
                             for _ in range(n)], dt)
        else:
            pool = [0.0, -0.0, 1.5, -2.25, 1e-3, 65504.0, float("nan"), float("inf"),
                    float("-inf"), rng.uniform(-1e6, 1e6), 1 / 3]
            with np.errstate(over="ignore"):
                data = np.array([rng.choice(pool) for _ in range(n)]).astype(dt)
        return data.reshape(shape), dt
    if kind == "fixed":
        size = rng.choice([1, 2, 5, 16, 300])
        pool = [b"", b"abc", "h\u00e9".encode(), b"a\x00b", b"\xff\xfe", b"x" * 300]
        data = np.array([rng.choice(pool)[:size] for _ in range(n)], f"S{size}")
        return data.reshape(shape), data.dtype
    if kind in ("vlen_ascii", "vlen_utf8"):
        enc = "ascii" if kind == "vlen_ascii" else "utf-8"
        pool = ["", "abc", "x" * 300] + (["h\u00e9llo", "\u4e2d\U0001f600"] if enc != "ascii"
                                         else [])
        dt = h5py.string_dtype(enc)
        pool = [p.encode() for p in pool] + [b"\xe9t\xe9", b"\xff\xfe", b"a\x00b"]
        data = np.array([rng.choice(pool) for _ in range(n)], object)
        return data.reshape(shape), dt
    if kind == "compound":
        dt = np.dtype([("a", "<f4"), ("b", ">i2")] if rng.random() < 0.5
                      else [("r", "<f8"), ("i", "<f8")])
        return np.zeros(shape, dt), dt
    if kind == "enum":
        dt = h5py.enum_dtype(rng.choice([{"FALSE": 0, "TRUE": 1}, {"RED": 0, "GREEN": 1}]),
                             basetype="i1")
        return np.zeros(shape, dt), dt
    if kind == "vlen_int":
        dt = h5py.vlen_dtype(np.dtype("i4"))
        data = np.empty(shape, object)
        for i in np.ndindex(shape):
            data[i] = np.arange(rng.randint(0, 3), dtype="i4")
        return data, dt
    if kind == "chars":  # MATLAB_fields
        dt = h5py.vlen_dtype(np.dtype("S1"))
        data = np.empty(shape, object)
        for i in np.ndindex(shape):
            data[i] = np.array([rng.choice([b"a", b"\x00", b"\xe9", b"Z"])
                                for _ in range(rng.choice([0, 1, 2, 3, 4] + [1] * 15))], "S1")
        return data, dt
    if kind == "ref":
        dt = h5py.ref_dtype
        data = np.empty(shape, object)
        for i in np.ndindex(shape):
            data[i] = f.ref if rng.random() < 0.7 else h5py.Reference()
        return data, dt
    if kind == "array":
        dt = np.dtype("(2,)f4")
        return np.zeros(shape, dt), dt
    if kind == "opaque":
        dt = np.dtype("V4")
        return np.zeros(shape, dt), dt
    raise ValueError(kind)


KINDS = ["num"] * 8 + ["fixed"] * 2 + ["vlen_ascii", "vlen_utf8"] * 2 + [
    "compound", "enum", "vlen_int", "chars", "ref", "array", "opaque"]


def _attrs(rng, np, h5py, f, obj, plain: bool):
    for _ in range(rng.choice([0, 0, 1, 2, 3, 6])):
        name = _name(rng)
        kind = "plainnum" if plain and rng.random() < 0.6 else rng.choice(
            ["plainnum", "fixed", "vlen_ascii", "vlen_utf8", "chars"] if plain else KINDS)
        r = rng.random()
        try:
            if r < 0.05:
                obj.attrs[name] = h5py.Empty(rng.choice(["f4", "S5", "i8"]))
                continue
            shape = _shape(rng, big=r > 0.9)
            data, dt = _value(rng, np, h5py, f, kind, shape)
            if kind.endswith("num") and r > 0.97:  # large: dense attribute storage or beyond
                data = np.arange(rng.choice([20_000, 140_000]), dtype=dt)
            obj.attrs.create(name, data, dtype=dt)
        except (TypeError, ValueError, OSError):
            pass  # a combination h5py refuses to write: not a case


def _dataset(rng, np, h5py, f, parent, name, plain: bool):
    kind = rng.choice(["plainnum"] * 4 + ["fixed", "vlen_utf8", "vlen_ascii"] if plain
                      else KINDS)
    r = rng.random()
    if r < 0.05:
        parent.create_dataset(name, data=h5py.Empty(rng.choice(["f4", "S5"])))
        return
    shape = _shape(rng)
    data, dt = _value(rng, np, h5py, f, kind, shape)
    kw = {}
    if shape and min(shape) > 0 and rng.random() < 0.4:
        kw["chunks"] = tuple(rng.randint(1, s) for s in shape)
        if rng.random() < 0.5:
            kw["compression"] = rng.choice(["gzip", "lzf", "gzip"])
            if kw["compression"] == "gzip":
                kw["compression_opts"] = rng.randint(0, 9)
        kw["shuffle"] = rng.random() < 0.3
        kw["fletcher32"] = rng.random() < 0.2
        if rng.random() < 0.2:
            kw["maxshape"] = tuple(None for _ in shape)
    if rng.random() < 0.15 and not kw and shape:  # compact
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        tid = h5py.h5t.py_create(dt, logical=True)
        did = h5py.h5d.create(parent.id, name.encode(), tid,
                              h5py.h5s.create_simple(shape), dcpl=dcpl)
        ds = h5py.Dataset(did)
        if data.size and kind in ("num", "plainnum", "fixed"):
            ds[...] = data
        return
    if rng.random() < 0.15:  # allocated but never written
        parent.create_dataset(name, shape=shape, dtype=dt, **kw)
        return
    ds = parent.create_dataset(name, data=data, dtype=dt, **kw)
    _attrs(rng, np, h5py, f, ds, plain)


def generate(path: str, rng: random.Random, plain: bool) -> None:
    """A random well-formed HDF5 file; ``plain`` keeps to what the lean walk handles."""
    import h5py
    import numpy as np

    kw = {}
    if rng.random() < 0.2:
        kw["userblock_size"] = rng.choice([512, 1024, 4096])
    kw["track_order"] = rng.random() < 0.3
    if rng.random() < 0.2:
        kw["libver"] = rng.choice(["earliest", "latest", ("v108", "v114")])
    with h5py.File(path, "w", **kw) as f:
        groups = [f]
        objs = []
        for _ in range(rng.randint(0, 12)):
            parent = rng.choice(groups)
            name = _name(rng)
            if name in parent:
                continue
            r = rng.random()
            try:
                if r < 0.3:
                    g = parent.create_group(name, track_order=rng.random() < 0.3)
                    _attrs(rng, np, h5py, f, g, plain)
                    groups.append(g)
                    objs.append(g)
                elif r < 0.85:
                    _dataset(rng, np, h5py, f, parent, name, plain)
                    objs.append(parent[name])
                elif not plain and r < 0.88:  # a committed datatype, used or not
                    parent[name] = np.dtype(rng.choice(["<f4", ">i2", "S3"]))
                    if rng.random() < 0.5:
                        parent.create_dataset(name + "_t", shape=(2,), dtype=parent[name])
                elif r < 0.92 and objs:
                    parent[name] = rng.choice(objs)  # a hard-link alias
                elif not plain and r < 0.96:
                    parent[name] = h5py.SoftLink(rng.choice(["/", "/nowhere"] +
                                                            [o.name for o in objs]))
                elif not plain:
                    parent[name] = h5py.ExternalLink("other.h5", "/x")
            except (TypeError, ValueError, OSError):
                pass  # a combination h5py refuses to write: not a case
        _attrs(rng, np, h5py, f, f, plain)
        if rng.random() < 0.15:
            h5py.h5o.set_comment(f.id, rng.choice([b"a comment", "\u00e9t\u00e9".encode(),
                                                   b""]))
        if kw.get("userblock_size"):
            pass
    if kw.get("userblock_size"):
        with open(path, "r+b") as fh:
            fh.write(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))


# --------------------------------------------------------------------------------------
# the campaign


def mutations(rng: random.Random, size: int, start: int) -> list:
    """Fewer, smaller mutations than test_fuzz's, most in the metadata up front."""
    return mutation_plan(rng, size, start, most=4, weights=(45, 25, 10, 5, 5, 10),
                         signature=0.02, head=0.8, cut_after=2, set_len=8, run_len=64)


class Campaign:
    def __init__(self, workdir: str):
        self.dir = workdir
        self.lean = Worker(LEAN_WORKER, [str(LEAN_MEMORY)], env=lean_env())
        self.ref = Worker(H5PY_WORKER, env=lean_env())
        self.stats = {"cases": 0, "lean_tree": 0, "stepped_aside": 0, "h5py_error": 0,
                      "findings": 0, "hangs": 0}

    def close(self):
        self.lean.close()
        self.ref.close()

    def check(self, path: str, in_memory: bool = True) -> str | None:
        lean = self.lean.ask(path, in_memory)
        ref = self.ref.ask(path)
        s = self.stats
        s["cases"] += 1
        if lean.get("result") is not None:
            s["lean_tree"] += 1
        elif "result" in lean:
            s["stepped_aside"] += 1
        if not isinstance(ref.get("result"), dict):
            s["h5py_error"] += 1
        s["hangs"] += "hang" in lean or "hang" in ref
        f = compare(lean, ref)
        s["findings"] += f is not None
        return f

    def gen_case(self, seed: int) -> tuple[str, str | None]:
        rng = random.Random(seed)
        path = os.path.join(self.dir, "gen.h5")
        generate(path, rng, plain=rng.random() < 0.5)
        return path, self.check(path, in_memory=rng.random() < 0.7)

    def mut_case(self, seed: int) -> tuple[str, str | None]:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            base = FIX / rng.choice(MUT_SEEDS)
            data = base.read_bytes()
            start = 520 if base.suffix == ".mat" else 8
        else:
            gpath = os.path.join(self.dir, "base.h5")
            generate(gpath, rng, plain=True)
            data = Path(gpath).read_bytes()
            start = 8 if data[:8] == b"\x89HDF\r\n\x1a\n" else 1032
        out = mutate(data, mutations(rng, len(data), start))
        path = os.path.join(self.dir, "mut.h5")
        with open(path, "wb") as fh:
            fh.write(out)
        return path, self.check(path, in_memory=rng.random() < 0.7)


def run(gen: int, mut: int, seed: int, keep: str | None = None, log=print) -> dict:
    """Run ``gen`` generated and ``mut`` mutated cases; returns the stats and findings
    (each with the case's seed, which reproduces it)."""
    work = tempfile.mkdtemp(prefix="leanfuzz-")
    c = Campaign(work)
    findings = []
    t0 = time.time()
    try:
        todo = [("gen", seed * 1_000_003 + i) for i in range(gen)] + \
               [("mut", seed * 1_000_003 + i) for i in range(mut)]
        for n, (kind, s) in enumerate(todo):
            path, f = (c.gen_case if kind == "gen" else c.mut_case)(s)
            if f:
                findings.append({"kind": kind, "seed": s, "finding": f})
                log(f"FINDING {kind} seed={s}: {f}")
                if keep:
                    os.makedirs(keep, exist_ok=True)
                    shutil.copy(path, os.path.join(keep, f"{kind}-{s}.h5"))
            if (n + 1) % 250 == 0:
                log(f"{n + 1}/{len(todo)} {c.stats} {time.time() - t0:.0f}s")
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"stats": c.stats, "findings": findings, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen", type=int, default=500)
    ap.add_argument("--mut", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", help="copy every file with a finding into this folder")
    a = ap.parse_args(argv)
    res = run(a.gen, a.mut, a.seed, a.keep)
    print(json.dumps(res["stats"]), res["seconds"], "s")
    return 1 if res["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
