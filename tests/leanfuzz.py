"""Differential fuzzing of the h5py-free walks against the h5py walk: the ctypes walk
(reading/h5lean.py, subject ``lean``) and the pure-Python reader of the classic format
(reading/h5parse.py, subject ``parse``).

Contract of ``walk_lean`` and ``walk_parsed``: for any file each returns exactly the tree
the h5py walk gives (``FileTree.to_dict()``, comment and userblock) or None. Two kinds of
case:

* ``gen``: a random well-formed file written with h5py (every dtype h5py writes, both byte
  orders, strings fixed/vlen ascii/utf-8, references, compounds, enums, chunked/compressed/
  compact/empty datasets, attributes of all of these, track_order, aliases, userblocks,
  soft/external links, comments); with the parse subject, most are "classic" files in
  h5parse's scope that stress it (deep group B-trees, many links, nested groups, string
  paddings, MATLAB_fields, filters, compact/empty/unallocated datasets, aliases, edits
  that leave freed space and NIL messages);
* ``mut``: a small fixture or a generated file with bytes mutated (mostly its metadata;
  with the parse subject, mostly inside the structures a metadata scan finds: superblock,
  object headers and their messages, B-tree and symbol nodes, local and global heaps).

Each file goes through long-lived worker processes: one per subject, none importing h5py
or NumPy, each under a memory ceiling (the lean one also checks after every case that no
HDF5 id is left open), and one that runs the h5py walk (asked only when a subject gives a
tree or fails). The parent kills and restarts a worker that outlives the time limit.
Findings: a different tree; a tree for a file the h5py walk rejects; a subject crashing,
hanging or running out of memory where h5py does not; an HDF5 id left open.

    python tests/leanfuzz.py --gen 2000 --mut 2000 --seed 1   # a campaign, both subjects
    python tests/leanfuzz.py --subject parse --keep findings/  # h5parse only
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


PARSE_WORKER = r"""
import json, os, re, resource, sys, time
from wtransplant.errors import InputError
from wtransplant.reading import h5parse
from wtransplant.reading.h5io import check_readable_file, read_head
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/statm") as fh:
    vm = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[1]), hard))
if os.environ.get("WT_H5PARSE_FILE"):  # a changed copy of h5parse.py under test
    import importlib.util
    spec = importlib.util.spec_from_file_location("h5parse_test", os.environ["WT_H5PARSE_FILE"])
    h5parse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(h5parse)
WHOLE = h5parse.WHOLE_FILE
BAIL = getattr(h5parse, "_Bail", None)

def why(f, size):
    # why walk_parsed stepped aside: its first _Bail or exception (private; best effort)
    try:
        with open(f, "rb") as fh:
            h5parse._Walk(h5parse._Data(fh, size)).run()
    except BaseException as e:
        if BAIL is not None and isinstance(e, BAIL):
            return "bail: " + str(e.args[0] if e.args else "")
        return re.sub(r"\d+", "N", f"{type(e).__name__}: {e}")[:90]
    return "no reason found"

print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    f, in_memory = json.loads(line)
    try:
        head = read_head(check_readable_file(f))  # as the command line does first
    except InputError:
        print(json.dumps({"result": None, "why": "refused", "imported": []}), flush=True)
        continue
    if head.startswith(b"PK"):  # as LeanHDF5Source.try_open
        print(json.dumps({"result": None, "why": "zip", "imported": []}), flush=True)
        continue
    size = os.path.getsize(f)
    h5parse.WHOLE_FILE = WHOLE if in_memory else 0  # else the piece-by-piece reads
    t0 = time.perf_counter()
    try:
        t = h5parse.walk_parsed(f, f, file_size=size)
        res = None if t is None else {"tree": t.to_dict(), "comment": t.comment,
                                      "userblock": t.userblock.hex()}
        out = {"result": res}
    except MemoryError:
        out = {"crash": "MemoryError"}
    except BaseException as e:
        out = {"crash": f"{type(e).__name__}: {e}"[:300]}
    out["seconds"] = round(time.perf_counter() - t0, 4)
    if out.get("result", 0) is None:
        out["why"] = why(f, size)
        if out["why"].startswith("MemoryError"):  # walk_parsed caught it: still unbounded
            out["crash"] = "MemoryError (caught; returned None)"
    out["imported"] = sorted(m for m in ("numpy", "h5py") if m in sys.modules)
    print(json.dumps(out), flush=True)
"""

SUBJECTS = ("lean", "parse")

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


def compare(lean: dict, ref: dict, name: str = "lean") -> str | None:
    """The finding for one file and one subject (``lean``: its worker's answer), or
    None."""
    if lean.get("imported"):
        return f"{name} worker imported {lean['imported']}"
    if lean.get("open_ids"):
        return f"{lean['open_ids']} HDF5 ids left open"
    r = ref.get("result")
    h5py_ok = isinstance(r, dict) or (isinstance(r, str) and not r.startswith("crash"))
    if "hang" in lean or "died" in lean or "crash" in lean:
        what = ("hang" if "hang" in lean else f"died rc={lean.get('died')}" if "died" in lean
                else lean["crash"])
        return f"{name} {what} (h5py: {_short(ref)})" if h5py_ok else None
    got = lean["result"]
    if got is None:
        return None
    if r == "refused" or (isinstance(r, str) and r.startswith("error")):
        return f"{name} gives a tree, h5py: {r}"
    if not isinstance(r, dict):
        return f"{name} gives a tree, h5py: {_short(ref)}"
    a, b = json.dumps(got), json.dumps(r)  # strings: NaN equals NaN, order counts
    return None if a == b else f"{name}: different tree: " + _first_difference(got, r)


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
# classic files: h5parse's scope (superblock v0/v1, v1 headers, symbol tables), stressed

CLASSIC_NAMES = ["a", "B", "b", "_", "Z9", "a b", "a.b", "x-1", "\u00e9", "\u00e9t\u00e9",
                 "\u4e2d", "\U0001f600", "aa", "a_", "A", "0", "10", "9", "~", "kernel:0",
                 "bias:0", "dense_1", "#refs#"]


def _classic_name(rng: random.Random, taken) -> bytes | None:
    """A link or attribute name as bytes: h5py then leaves the link's character set
    ASCII (a UTF-8 one turns the group into a new-style group), whatever its bytes."""
    for _ in range(8):
        r = rng.random()
        if r < 0.5:
            n = rng.choice(CLASSIC_NAMES) + rng.choice(["", "", str(rng.randrange(100))])
        elif r < 0.85:
            n = _name(rng)
        elif r < 0.9:
            n = rng.choice(["\xff\xfe", "a\xe9", "\x80"]) + str(rng.randrange(9))
            n = n.encode("latin-1").decode("utf-8", "surrogateescape")
        else:
            n = rng.choice("abz\u00e9") * rng.randint(30, 300)  # grows the local heap
        b = n.encode("utf-8", "surrogateescape")
        if b in (b".", b".."):
            continue
        try:  # (h5py's `in` decodes the name as UTF-8)
            if not (taken.id.links.exists(b) if hasattr(taken, "id") else b in taken):
                return b
        except (KeyError, ValueError):
            pass
    return None


def _classic_shape(rng: random.Random):
    r = rng.random()
    if r < 0.3:
        return ()
    if r < 0.4:
        return tuple(rng.choice([0, 1, 3]) for _ in range(rng.randint(1, 3)))
    if r < 0.5:
        return (rng.randint(30, 400),)
    return tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3)))


def _set_k(fcpl, rng: random.Random) -> None:
    """Small B-tree ranks (H5Pset_sym_k, H5Pset_istore_k; h5py has no wrapper): deep group
    and chunk B-trees in small files; a changed istore_k gives a version-1 superblock."""
    import ctypes

    from wtransplant.reading import h5lean

    path = h5lean.library_path()
    if not path or rng.random() < 0.35:
        return
    lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)  # the library h5py has loaded
    lib.H5Pset_sym_k.argtypes = [ctypes.c_int64, ctypes.c_uint, ctypes.c_uint]
    lib.H5Pset_istore_k.argtypes = [ctypes.c_int64, ctypes.c_uint]
    lib.H5Pset_sym_k(fcpl.id, rng.choice([2, 2, 3, 16]), rng.choice([1, 1, 2, 4]))
    if rng.random() < 0.4:
        lib.H5Pset_istore_k(fcpl.id, rng.choice([2, 3, 32]))  # (1: the library crashes)


def _str_tid(h5py, size: int, pad: int, utf8: bool):
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(size)
    tid.set_strpad(pad)
    tid.set_cset(h5py.h5t.CSET_UTF8 if utf8 else h5py.h5t.CSET_ASCII)
    return tid


STR_POOL = [b"", b"abc", "h\u00e9".encode(), b"a\x00b", b"\x00", b"ab  ", b" ", b"\xff\xfe",
            "\u4e2d\U0001f600".encode(), b"x" * 300]


def _classic_value(rng, np, h5py, f, kind: str, shape, strict: bool = False):
    """(data, dtype or low-level type id) for a classic attribute or dataset; ``strict``
    keeps to what h5parse reads (no space padding, no empty variable-length strings)."""
    n = int(np.prod(shape)) if shape else 1
    if kind == "fixedpad":  # any padding and character set, written as stored
        size = rng.choice([1, 2, 3, 5, 8, 255, 256, 257])
        tid = _str_tid(h5py, size, rng.choice([0, 1] if strict else [0, 1, 1, 2]),
                       rng.random() < 0.5)
        data = np.array([rng.choice(STR_POOL)[:size] for _ in range(n)], f"S{size}")
        return data.reshape(shape), tid
    if kind in ("vlen_ascii", "vlen_utf8") and rng.random() < 0.5:
        dt = h5py.string_dtype("ascii" if kind == "vlen_ascii" else "utf-8")
        pool = [x for x in STR_POOL if x] if strict else STR_POOL + [b"", b""]
        data = np.array([rng.choice(pool) for _ in range(n)], object)
        return data.reshape(shape), dt
    if kind == "bignum":  # past MAX_ATTR_ELEMENTS: summarised
        dt = np.dtype(rng.choice(_numeric_dtypes()[:-5]))
        m = rng.choice([33, 100, 1000])
        pool = [0.0, float("nan"), -1.0, 2.5] if dt.kind == "f" else [0, 1, 7, 100]
        data = np.arange(m).astype(dt) if rng.random() < 0.7 else \
            np.array([rng.choice(pool) for _ in range(m)]).astype(dt)
        return data, dt
    if kind == "bool":
        return np.array([rng.random() < 0.5 for _ in range(n)]).reshape(shape), np.dtype("?")
    return _value(rng, np, h5py, f, kind, shape)


ATTR_KINDS = (["plainnum"] * 6 + ["bignum", "fixed", "fixedpad", "fixedpad", "vlen_ascii",
              "vlen_utf8", "vlen_utf8", "chars", "chars", "empty", "bool", "ref"])
STRICT_ATTR_KINDS = [k for k in ATTR_KINDS if k not in ("bool", "ref")]


def _classic_attrs(rng, np, h5py, f, obj, most: int = 6, strict: bool = False) -> None:
    count = rng.choice([0, 0, 1, 2, 3, most] + ([12, 25] if rng.random() < 0.1 else []))
    for _ in range(count):
        name = _classic_name(rng, ())
        kind = rng.choice(STRICT_ATTR_KINDS if strict else ATTR_KINDS)
        if name is None or name in obj.attrs:
            continue
        name = name.decode("utf-8", "replace")
        try:
            if kind == "empty":
                obj.attrs[name] = h5py.Empty(rng.choice(["f4", "S5", "i8", "<u2"]))
                continue
            if kind == "chars" and rng.random() < 0.5 and "MATLAB_fields" not in obj.attrs:
                name = "MATLAB_fields"
            shape = _classic_shape(rng) if kind != "bignum" else None
            data, dt = _classic_value(rng, np, h5py, f, kind, shape or (), strict)
            if kind == "chars" and strict and any(len(x) == 0 for x in data.flat):
                continue
            if isinstance(dt, h5py.h5t.TypeID):
                space = (h5py.h5s.create(h5py.h5s.SCALAR) if not data.shape
                         else h5py.h5s.create_simple(data.shape))
                aid = h5py.h5a.create(obj.id, name.encode(), dt, space)
                aid.write(np.ascontiguousarray(data), mtype=dt)
            else:
                obj.attrs.create(name, data, dtype=dt)
        except Exception:  # a combination h5py refuses to write
            pass  # a combination h5py refuses to write: not a case


DS_KINDS = (["plainnum"] * 6 + ["fixed", "fixedpad", "vlen_ascii", "vlen_utf8", "bool", "ref",
            "scalarstr", "scalarstr", "chars", "num"])
STRICT_DS_KINDS = [k for k in DS_KINDS if k not in ("bool", "chars", "num")]


def _classic_dataset(rng, np, h5py, f, parent, name: bytes, strict: bool = False) -> None:
    kind = rng.choice(STRICT_DS_KINDS if strict else DS_KINDS)
    r = rng.random()
    if r < 0.05:
        parent.create_dataset(name, data=h5py.Empty(rng.choice(["f4", "S5", "<i2"])))
        return
    if kind == "scalarstr":  # Octave's 'type' labels: read by the walk, fixed or vlen
        kind, shape = rng.choice(["fixedpad", "vlen_ascii", "vlen_utf8", "fixed"]), ()
    else:
        shape = _classic_shape(rng)
    data, dt = _classic_value(rng, np, h5py, f, kind, shape, strict)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    layout = rng.choice(["contiguous"] * 3 + ["chunked"] * 3 + ["compact", "unallocated"])
    if layout == "chunked" and shape and min(shape) > 0:
        dcpl.set_chunk(tuple(rng.randint(1, s) for s in shape))
        for flt in rng.sample(["gzip", "shuffle", "fletcher32", "lzf"], rng.randint(0, 3)):
            if flt == "gzip":
                dcpl.set_deflate(rng.randint(0, 9))
            elif flt == "shuffle":
                dcpl.set_shuffle()
            elif flt == "fletcher32":
                dcpl.set_fletcher32()
            else:
                dcpl.set_filter(32000, h5py.h5z.FLAG_OPTIONAL)
    elif layout == "compact" and data.nbytes < 30_000:
        dcpl.set_layout(h5py.h5d.COMPACT)
    if rng.random() < 0.1 and isinstance(dt, np.dtype) and dt.kind in "iuf":
        dcpl.set_fill_value(np.array(7, dt))
    if rng.random() < 0.2:
        dcpl.set_obj_track_times(True)
    tid = dt if isinstance(dt, h5py.h5t.TypeID) else h5py.h5t.py_create(dt, logical=True)
    if shape and dcpl.get_layout() == h5py.h5d.CHUNKED and rng.random() < 0.3:
        space = h5py.h5s.create_simple(shape, tuple(h5py.h5s.UNLIMITED for _ in shape))
    else:
        space = (h5py.h5s.create_simple(shape) if shape else
                 h5py.h5s.create(h5py.h5s.SCALAR))
    did = h5py.h5d.create(parent.id, name, tid, space, dcpl=dcpl)
    if layout != "unallocated" and data.size:
        try:
            if rng.random() < 0.2 and data.ndim and dcpl.get_layout() == h5py.h5d.CHUNKED:
                h5py.Dataset(did)[:1] = data[:1]  # some chunks only
            else:
                mtype = dt if isinstance(dt, h5py.h5t.TypeID) else None
                h5py.Dataset(did).id.write(h5py.h5s.ALL, h5py.h5s.ALL,
                                           np.ascontiguousarray(data), mtype=mtype)
        except Exception:  # a combination h5py refuses to write
            pass
    _classic_attrs(rng, np, h5py, f, h5py.Dataset(did), 4, strict)


def _many_links(rng, np, h5py, f, parent, objs) -> None:
    """A group with enough links for several symbol nodes and B-tree levels."""
    g = parent.create_group(_classic_name(rng, parent) or b"many%d" % rng.randrange(999))
    dsets = rng.random() < 0.6
    n = rng.choice([9, 17, 33, 40] + ([65, 100] if dsets else []))
    for i in range(n):
        name = rng.choice([f"{i}", f"layer_{i}", f"w{i:04d}",
                           f"{rng.choice(CLASSIC_NAMES)}{i}"]).encode()
        if name in g:
            continue
        if dsets:
            g.create_dataset(name, data=np.arange(rng.randint(0, 3), dtype="<f4"))
        else:
            g.create_group(name)
    objs.append(g)


def generate_classic(path: str, rng: random.Random) -> None:
    """A well-formed file in h5parse's scope (old-style groups, v1 object headers): deep
    B-trees, many links, every attribute kind, string paddings, filters, layouts,
    aliases, userblocks, comments; sometimes edited afterwards (links and attributes
    deleted or rewritten: freed heap space, NIL messages, relocated messages)."""
    import h5py
    import numpy as np

    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    ub = rng.choice([0] * 6 + [512, 512, 1024, 1024, 2048])
    if ub:
        fcpl.set_userblock(ub)
    _set_k(fcpl, rng)
    strict = rng.random() < 0.7  # most files wholly in h5parse's scope
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl)
    with h5py.File(fid) as f:
        groups, objs = [f], []
        for _ in range(rng.choice([2, 4, 8, 14])):
            parent = rng.choice(groups)
            name = _classic_name(rng, parent)
            if name is None:
                continue
            r = rng.random()
            try:
                if r < 0.1:
                    _many_links(rng, np, h5py, f, parent, objs)
                elif r < 0.35:
                    g = parent.create_group(name)
                    _classic_attrs(rng, np, h5py, f, g, 6, strict)
                    groups.append(g)
                    objs.append(g)
                    if rng.random() < 0.2:  # a chain of nested groups
                        for i in range(rng.randint(2, 6)):
                            g = g.create_group(b"n%d" % i)
                        groups.append(g)
                elif r < 0.85:
                    _classic_dataset(rng, np, h5py, f, parent, name, strict)
                    objs.append(parent[name])
                elif r < 0.97 and objs:
                    parent[name] = rng.choice(objs)  # a hard-link alias
                elif r >= 0.97:
                    parent[name] = f  # a link back to the root (a cycle)
            except Exception:  # a combination h5py refuses to write
                pass  # a combination h5py refuses to write: not a case
        _classic_attrs(rng, np, h5py, f, f, 6, strict)
        if rng.random() < 0.3:
            h5py.h5o.set_comment(f.id, rng.choice([b"a comment", "\u00e9t\u00e9".encode(),
                                                   b"", b"x" * 300, b"\xff\xfe"]))
        if objs and rng.random() < 0.1:
            h5py.h5o.set_comment(rng.choice(objs).id, b"not the root's")
    if rng.random() < 0.25:
        _edit(path, rng)
    if ub:
        with open(path, "r+b") as fh:
            fh.write(bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))))


def _edit(path: str, rng: random.Random) -> None:
    import h5py
    import numpy as np

    with h5py.File(path, "r+") as f:
        items: list = []
        f.visit(items.append)
        for _ in range(rng.randint(1, 6)):
            if not items:
                break
            name = rng.choice(items)
            try:
                obj = f[name]
                r = rng.random()
                if r < 0.35:
                    del f[name]
                    items.remove(name)
                elif r < 0.55 and obj.attrs:
                    del obj.attrs[rng.choice(list(obj.attrs))]
                elif r < 0.75:
                    obj.attrs["edited"] = np.arange(rng.choice([1, 40, 200]), dtype="<i4")
                elif r < 0.9 and isinstance(obj, h5py.Group):
                    obj.create_group(f"added{rng.randrange(100)}")
                else:
                    f.move(name, name.rsplit("/", 1)[0] + "/moved" + str(rng.randrange(99)))
                    items.remove(name)
            except Exception:  # a combination h5py refuses to write
                pass


# --------------------------------------------------------------------------------------
# metadata-aware mutations: structures found by a small scan of the unmutated file

def metadata_regions(data: bytes) -> dict:
    """Byte ranges of the metadata structures of a classic-format file, by kind: super,
    header (v1 object header prefixes), message (each message with its 8-byte header,
    keyed also by type as ``msg<type>``), btree, snod, heap, heapdata, gcol; and
    ``addrs``: the structures' relative addresses (for pointing one at another)."""
    import struct

    out: dict = {"super": [], "header": [], "message": [], "btree": [], "snod": [],
                 "heap": [], "heapdata": [], "gcol": [], "addrs": []}
    base = None
    for pos in (0, 512, 1024, 2048, 4096):
        if data[pos:pos + 8] == b"\x89HDF\r\n\x1a\n":
            base = pos
            break
    if base is None or len(data) < base + 100:
        return out
    v = data[base + 8]
    out["super"].append((base, 96 if v == 0 else 100))
    todo = [struct.unpack_from("<Q", data, base + (24 if v == 0 else 28) + 40)[0]]
    u16 = lambda i: struct.unpack_from("<H", data, i)[0]  # noqa: E731
    u64 = lambda i: struct.unpack_from("<Q", data, i)[0]  # noqa: E731
    for sig, key in ((b"TREE", "btree"), (b"SNOD", "snod"), (b"HEAP", "heap"),
                     (b"GCOL", "gcol")):
        i = data.find(sig, base)
        while i >= 0 and len(out[key]) < 2000:
            try:
                if key == "btree":
                    out[key].append((i, min(24 + 40 * u16(i + 6) + 40, len(data) - i)))
                elif key == "snod":
                    n = u16(i + 6)
                    out[key].append((i, 8 + 40 * n))
                    todo += [u64(i + 8 + 40 * k + 8) for k in range(min(n, 64))]
                elif key == "heap":
                    out[key].append((i, 32))
                    out["heapdata"].append((base + u64(i + 24), u64(i + 8)))
                else:
                    out[key].append((i, min(u64(i + 8), len(data) - i)))
                out["addrs"].append(i - base)
            except struct.error:
                pass
            i = data.find(sig, i + 1)
    seen: set = set()
    while todo and len(seen) < 2000:
        addr = todo.pop()
        a = base + addr
        if addr in seen or a + 16 > len(data) or data[a] != 1:
            continue
        seen.add(addr)
        out["addrs"].append(addr)
        out["header"].append((a, 16))
        chunks = [(a + 16, struct.unpack_from("<I", data, a + 8)[0])]
        while chunks:
            p, size = chunks.pop()
            end = min(p + size, len(data))
            while p + 8 <= end:
                mtype, msize = struct.unpack_from("<HH", data, p)
                out["message"].append((p, 8 + msize))
                out.setdefault(f"msg{mtype}", []).append((p, 8 + msize))
                if mtype == 0x10 and p + 24 <= end and len(chunks) < 64:
                    chunks.append((base + u64(p + 8), u64(p + 16)))
                p += 8 + msize
    return out


INTERESTING = (0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF,
               0xFFFFFFFF, (1 << 64) - 1, 1 << 63)
REGION_WEIGHTS = {"message": 30, "header": 8, "btree": 10, "snod": 10, "heap": 6,
                  "heapdata": 8, "gcol": 8, "super": 5, "msg1": 5, "msg3": 5, "msg8": 5,
                  "msg12": 8, "msg11": 3, "msg16": 3, "msg17": 3}


def metadata_mutations(rng: random.Random, data: bytes, regions: dict) -> list:
    """One to three edits inside the metadata structures, as ``mutate`` takes them: an
    integer field set to a boundary value, a neighbour or another structure's address;
    a bit flipped; a message body copied over another of the same type and size; a
    name's byte changed."""
    import struct

    kinds = [k for k in REGION_WEIGHTS if regions.get(k)]
    if not kinds:
        return []
    muts = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choices(kinds, weights=[REGION_WEIGHTS[k] for k in kinds])[0]
        start, length = rng.choice(regions[kind])
        length = max(1, min(length, len(data) - start))
        op = rng.random()
        if op < 0.15 and kind.startswith("msg"):  # same type, same size: consistent
            same = [r for r in regions[kind] if r[1] == length and r[0] != start]
            if same:
                src = rng.choice(same)[0]
                muts.append(["set", start + 8, list(data[src + 8:src + length])])
                continue
        if op < 0.3:
            i = start + rng.randrange(length)
            muts.append(["flip", i, rng.randrange(8)])
            continue
        if op < 0.38 and kind == "heapdata":
            i = start + rng.randrange(length)
            muts.append(["set", i, [rng.choice([0, 0x2F, 0x2E, 0x41, 0x7A, 0xC3, 0xFF,
                                                data[i] ^ 1 if i < len(data) else 0])]])
            continue
        width = rng.choice([1, 2, 4, 8])
        i = start + rng.randrange(0, max(1, length - width + 1), 1)
        if rng.random() < 0.6:
            i -= (i - start) % width  # fields sit at their alignment
        if i + width > len(data):
            continue
        cur = int.from_bytes(data[i:i + width], "little")
        r = rng.random()
        if r < 0.35:
            new = rng.choice(INTERESTING)
        elif r < 0.65:
            new = cur + rng.choice([-1, 1, -8, 8, 16, -16])
        elif r < 0.85 and regions["addrs"]:
            new = rng.choice(regions["addrs"])
        else:
            new = rng.choice([len(data), len(data) - 1, cur * 2, cur // 2, rng.randrange(256)])
        new &= (1 << (8 * width)) - 1
        muts.append(["set", i, list(struct.pack("<Q", new)[:width])])
    return muts


# --------------------------------------------------------------------------------------
# the campaign


def mutations(rng: random.Random, size: int, start: int) -> list:
    """Fewer, smaller mutations than test_fuzz's, most in the metadata up front."""
    return mutation_plan(rng, size, start, most=4, weights=(45, 25, 10, 5, 5, 10),
                         signature=0.02, head=0.8, cut_after=2, set_len=8, run_len=64)


def _generate_classic(path: str, rng: random.Random) -> None:
    try:
        generate_classic(path, rng)
    except Exception:  # (the library itself failed writing it): a plain file instead
        generate(path, rng, plain=True)


class Campaign:
    def __init__(self, workdir: str, subjects=SUBJECTS):
        self.dir = workdir
        self.subjects = [x for x in SUBJECTS if x in subjects]
        code = {"lean": LEAN_WORKER, "parse": PARSE_WORKER}
        self.workers = {x: Worker(code[x], [str(LEAN_MEMORY)], env=lean_env())
                        for x in self.subjects}
        self.ref = Worker(H5PY_WORKER, env=lean_env())
        self.stats = {"cases": 0, "h5py_asked": 0, "h5py_error": 0, "findings": 0,
                      "hangs": 0}
        for x in self.subjects:
            self.stats[f"{x}_tree"] = self.stats[f"{x}_none"] = 0
        #: per subject, case kind and generator family: trees, Nones and why (parse)
        self.detail: dict = {}
        self.last: dict = {}  # the last mutated case: its base and mutations
        self.slowest: dict = {}

    def close(self):
        for w in self.workers.values():
            w.close()
        self.ref.close()

    def check(self, path: str, in_memory: bool = True, family: str = "") -> list[str]:
        """The findings for one file (one per subject at most)."""
        got = {x: w.ask(path, in_memory) for x, w in self.workers.items()}
        s = self.stats
        s["cases"] += 1
        # the h5py walk only matters where a subject gave a tree or failed
        if any(g.get("result") is not None or "result" not in g or "crash" in g
               for g in got.values()):
            ref = self.ref.ask(path)
            s["h5py_asked"] += 1
            s["h5py_error"] += not isinstance(ref.get("result"), dict)
            s["hangs"] += "hang" in ref
        else:
            ref = {"result": "not asked"}
        out = []
        for x, g in got.items():
            tree = g.get("result") is not None
            s[f"{x}_tree" if tree else f"{x}_none"] += "result" in g
            s["hangs"] += "hang" in g
            d = self.detail.setdefault(f"{x} {family}", {"tree": 0, "none": 0, "why": {}})
            d["tree" if tree else "none"] += 1
            if not tree and g.get("why"):
                d["why"][g["why"]] = d["why"].get(g["why"], 0) + 1
            if g.get("seconds", 0) > self.slowest.get(x, (0,))[0]:
                self.slowest[x] = (g["seconds"], path)
            f = compare(g, ref, x)
            if f:
                out.append(f)
        s["findings"] += len(out)
        return out

    def gen_case(self, seed: int) -> tuple[str, list[str]]:
        rng = random.Random(seed)
        path = os.path.join(self.dir, "gen.h5")
        if self.subjects == ["lean"]:  # the lean-only campaign's cases, as before
            family = "plain" if rng.random() < 0.5 else "full"
        else:
            r = rng.random()
            family = "classic" if r < 0.6 else "plain" if r < 0.8 else "full"
        if family == "classic":
            _generate_classic(path, rng)
        else:
            generate(path, rng, plain=family == "plain")
        return path, self.check(path, rng.random() < 0.7, "gen " + family)

    def mut_case(self, seed: int) -> tuple[str, list[str]]:
        rng = random.Random(seed)
        aware = self.subjects != ["lean"]
        r = rng.random()
        if r < (0.3 if aware else 0.5):
            base = FIX / rng.choice(MUT_SEEDS)
            data = base.read_bytes()
            start = 520 if base.suffix == ".mat" else 8
            self.base_path = str(base)
            family = "fixture:" + str(base.relative_to(FIX))
        else:
            gpath = os.path.join(self.dir, "base.h5")
            family = "classic" if aware and r < 0.8 else "plain"
            if family == "classic":
                _generate_classic(gpath, rng)
            else:
                generate(gpath, rng, plain=True)
            data = Path(gpath).read_bytes()
            self.base_path = gpath
            start = 8 if data[:8] == b"\x89HDF\r\n\x1a\n" else 1032
        if aware and rng.random() < 0.7:
            muts = metadata_mutations(rng, data, metadata_regions(data))
            if rng.random() < 0.2:
                muts += mutations(rng, len(data), start)[:1]
            muts = muts or mutations(rng, len(data), start)
        else:
            muts = mutations(rng, len(data), start)
        self.last = {"base": family, "mutations": muts}
        out = mutate(data, muts)
        family = family.split(":")[0]
        path = os.path.join(self.dir, "mut.h5")
        with open(path, "wb") as fh:
            fh.write(out)
        return path, self.check(path, rng.random() < 0.7, "mut " + family)


def run(gen: int, mut: int, seed: int, keep: str | None = None, log=print,
        subjects=SUBJECTS) -> dict:
    """Run ``gen`` generated and ``mut`` mutated cases through ``subjects``; returns the
    stats and findings (each with the case's seed, which reproduces it)."""
    work = tempfile.mkdtemp(prefix="leanfuzz-")
    c = Campaign(work, subjects)
    findings = []
    t0 = time.time()
    try:
        todo = [("gen", seed * 1_000_003 + i) for i in range(gen)] + \
               [("mut", seed * 1_000_003 + i) for i in range(mut)]
        for n, (kind, s) in enumerate(todo):
            path, found = (c.gen_case if kind == "gen" else c.mut_case)(s)
            for f in found:
                findings.append({"kind": kind, "seed": s, "finding": f,
                                 **(c.last if kind == "mut" else {})})
                log(f"FINDING {kind} seed={s}: {f}")
            if found and keep:
                os.makedirs(keep, exist_ok=True)
                shutil.copy(path, os.path.join(keep, f"{kind}-{s}.h5"))
                if kind == "mut":  # what it was before the mutations
                    shutil.copy(c.base_path, os.path.join(keep, f"{kind}-{s}.base.h5"))
            if (n + 1) % 250 == 0:
                log(f"{n + 1}/{len(todo)} {c.stats} {time.time() - t0:.0f}s")
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"stats": c.stats, "detail": c.detail, "slowest": c.slowest,
            "findings": findings, "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gen", type=int, default=500)
    ap.add_argument("--mut", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--subject", choices=["parse", "lean", "both"], default="both")
    ap.add_argument("--keep", help="copy every file with a finding into this folder")
    ap.add_argument("--report", help="write the stats, reasons and findings (JSON) here")
    a = ap.parse_args(argv)
    subjects = SUBJECTS if a.subject == "both" else (a.subject,)
    res = run(a.gen, a.mut, a.seed, a.keep, subjects=subjects)
    if a.report:
        with open(a.report, "w") as fh:
            json.dump(res, fh, indent=1)
    print(json.dumps(res["stats"]), res["seconds"], "s")
    return 1 if res["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
