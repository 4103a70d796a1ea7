"""The metadata walk without h5py (reading/h5lean.py) gives the h5py walk's tree exactly, or
steps aside: on every HDF5 fixture, on a file of edge cases written here, in a fresh
interpreter that never imports NumPy or h5py (its purpose: inspect's start-up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from wtransplant.errors import InputError
from wtransplant.reading import h5lean
from wtransplant.reading.h5io import open_source
from wtransplant.reading.tree import walk

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted(p for p in (ROOT / "fixtures").rglob("*")
                  if p.suffix in (".h5", ".mat", ".hdf5") and p.is_file())

#: run in a fresh interpreter: the lean walk of each file, as JSON, and proof that
#: neither NumPy nor h5py was imported
LEAN = """
import json, os, sys
from wtransplant.reading.h5lean import walk_lean
out = {}
for f in sys.argv[1:]:
    with open(f, "rb") as fh:
        head = fh.read(1024)
    t = walk_lean(f, f, file_size=os.path.getsize(f), head=head, in_memory=True)
    out[f] = None if t is None else {"tree": t.to_dict(), "comment": t.comment,
                                     "userblock": t.userblock.hex()}
out["imported"] = sorted(m for m in ("numpy", "h5py") if m in sys.modules)
print(json.dumps(out))
"""


def lean_trees(paths) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WTRANSPLANT_NO_FASTH5"}
    r = subprocess.run([sys.executable, "-c", LEAN, *map(str, paths)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out.pop("imported") == [], "the lean walk imported NumPy or h5py"
    return out


def h5py_tree(path) -> dict | str:
    """The h5py walk's tree; "refused" where opening refuses the file before any walk
    (a polyglot: the command line never walks it either); "error" where the walk fails."""
    try:
        src = open_source(path, in_memory=True)
    except InputError:
        return "refused"
    try:
        with src:
            t = walk(src)
    except InputError:
        return "error"
    return {"tree": t.to_dict(), "comment": t.comment, "userblock": t.userblock.hex()}


def test_constants_are_hdf5s():
    from h5py import h5d, h5i, h5l, h5p, h5s, h5t

    assert (h5lean.H5I_GROUP, h5lean.H5I_DATASET) == (h5i.GROUP, h5i.DATASET)
    assert (h5lean.T_INTEGER, h5lean.T_FLOAT, h5lean.T_STRING) == (
        h5t.INTEGER, h5t.FLOAT, h5t.STRING)
    assert (h5lean.ORDER_BE, h5lean.SGN_NONE) == (h5t.ORDER_BE, h5t.SGN_NONE)
    assert (h5lean.STR_NULLTERM, h5lean.STR_NULLPAD) == (h5t.STR_NULLTERM, h5t.STR_NULLPAD)
    assert (h5lean.S_SCALAR, h5lean.S_SIMPLE, h5lean.S_NULL) == (
        h5s.SCALAR, h5s.SIMPLE, h5s.NULL)
    assert h5lean.L_HARD == h5l.TYPE_HARD
    assert (h5lean.D_COMPACT, h5lean.D_CONTIGUOUS, h5lean.D_CHUNKED) == (
        h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED)
    assert h5lean.CRT_ORDER_TRACKED == h5p.CRT_ORDER_TRACKED


def test_every_fixture_same_tree_or_h5py():
    lean = lean_trees(FIXTURES)
    took = 0
    for p in FIXTURES:
        got = lean[str(p)]
        if got is None:
            continue  # stepped aside: the h5py walk decides
        ref = h5py_tree(p)
        if ref == "refused":
            continue
        took += 1
        assert got == ref, p
    # most weight files are plain: the fast path must really run on them
    assert took >= 30, took


def _edge_file(path: Path, *, ordered: bool = True) -> None:
    with h5py.File(path, "w", userblock_size=512, track_order=False) as f:
        a = f.attrs
        a["z_first"] = 1  # name order, not creation order
        a["fixed"] = np.bytes_(b"abc")
        a["vlen"] = "h\u00e9llo"
        a["vlen_list"] = ["a", "bb", ""]
        a["fixed_2d"] = np.array([[b"ab", b"c"], [b"", b"xyz"]])
        a["f16"] = np.float16(0.1)
        a["f32"] = np.float32(1 / 3)
        a["u64"] = np.uint64(2**64 - 1)
        a["i8s"] = np.arange(-3, 3, dtype=np.int8)
        a["be_big"] = np.linspace(-1, 1, 40).astype(">f4")
        a["nan_big"] = np.r_[np.arange(40.0), np.nan]
        a["int_big"] = np.arange(100, dtype=np.int64) * 12345
        a["empty"] = h5py.Empty("f4")
        a["zero_rows"] = np.zeros((0, 3), np.float32)
        a["zero_cols"] = np.zeros((3, 0), np.int32)
        a["grid"] = np.arange(6, dtype=np.uint16).reshape(2, 3)
        # MATLAB_fields: variable-length arrays of 1-byte strings, an array and a scalar
        chars = h5py.vlen_dtype(np.dtype("S1"))
        fields = np.empty(2, object)
        fields[0], fields[1] = np.array([b"W", b"1"], "S1"), np.array([b"b", b"\0", b"x"], "S1")
        a.create("fields", fields, dtype=chars)
        one = np.empty((), object)
        one[()] = np.array([b"a", b"\0", b"c"], "S1")
        a.create("one_field", one, dtype=chars)
        if ordered:  # a creation-ordered group: a new-style object header
            g = f.create_group("ordered", track_order=True)
            for k in ("b", "a", "c"):
                g.attrs[k] = k
        f.create_dataset("chunked", data=np.ones((40, 30), "f4"), chunks=(8, 30),
                         compression="gzip", compression_opts=4, shuffle=True)
        f.create_dataset("be_ints", data=np.arange(4, dtype=">i2"))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"really_compact", h5py.h5t.STD_I32LE,
                        h5py.h5s.create_simple((3,)), dcpl=dcpl)
        f.create_dataset("unwritten", shape=(5, 5), dtype="f8")
        f["label"] = np.bytes_(b"matrix")
        f.create_dataset("vlabel", data="cell", dtype=h5py.string_dtype())
        f.create_dataset("scalar", data=3.5)
        f.create_dataset("null_string", data=h5py.Empty("S5"))
        f["alias"] = f["scalar"]
        # fixed-length strings: null-terminated with a NUL inside, and null-padded
        for name, pad, raw in (("nullterm", h5py.h5t.STR_NULLTERM, b"ab\x00cd"),
                               ("nullpad", h5py.h5t.STR_NULLPAD, b"ab\x00cd\x00")):
            t = h5py.h5t.C_S1.copy()
            t.set_size(len(raw))
            t.set_strpad(pad)
            sp = h5py.h5s.create(h5py.h5s.SCALAR)
            at = h5py.h5a.create(f.id, name.encode(), t, sp)
            at.write(np.array(raw, dtype=f"S{len(raw)}"), mtype=t)
            ds = h5py.h5d.create(f.id, (name + "_ds").encode(), t, sp)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"),
                     mtype=t)


def spacepad_attr(f) -> None:
    """A space-padded string attribute (h5py writes none itself)."""
    t = h5py.h5t.C_S1.copy()
    t.set_size(4)
    t.set_strpad(h5py.h5t.STR_SPACEPAD)
    h5py.h5a.create(f.id, b"sp", t, h5py.h5s.create(h5py.h5s.SCALAR)).write(
        np.array(b"ab  ", "S4"), mtype=t)


def test_edge_cases_same_tree(tmp_path):
    p = tmp_path / "edges.h5"
    _edge_file(p)
    got = lean_trees([p])[str(p)]
    assert got is not None, "the lean walk stepped aside on plain attribute types"
    assert got == h5py_tree(p)
    attrs = got["tree"]["groups"][0]["attrs"]
    assert list(got["tree"]["groups"][1]["attrs"]) == ["b", "a", "c"]  # creation order
    assert attrs["nan_big"].startswith("<float64 array, shape (41,), min nan")
    assert attrs["be_big"].startswith("<>f4 array")
    assert attrs["fields"] == ["W1", "bx"] and attrs["one_field"] == ["a", "", "c"]


@pytest.mark.parametrize("what", ["soft", "external", "reference", "spacepad", "compound",
                                  "empty_chars"])
def test_steps_aside_where_h5py_decides(tmp_path, what):
    p = tmp_path / f"{what}.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.ones(3, "f4")
        if what == "soft":
            f["s"] = h5py.SoftLink("/x")
        elif what == "external":
            f["e"] = h5py.ExternalLink("other.h5", "/y")
        elif what == "reference":
            f.attrs["r"] = f["x"].ref
        elif what == "spacepad":
            spacepad_attr(f)
        elif what == "empty_chars":  # h5py cannot read a zero-length vlen element
            chars = np.empty(2, object)
            chars[0], chars[1] = np.array([b"a"], "S1"), np.array([], "S1")
            f.attrs.create("fields", chars, dtype=h5py.vlen_dtype(np.dtype("S1")))
        else:
            f["c"] = np.zeros(2, [("a", "f4"), ("b", "i4")])
    assert lean_trees([p])[str(p)] is None


def test_steps_aside_where_h5py_finds_root_damaged(tmp_path):
    """The root's link info message names a B-tree past the end of the file: the links
    are compact, so visiting them works, but h5py's walk asks for the root's full info
    (header and index sizes) and reports the damage; the lean walk must not give a tree
    (found by tests/leanfuzz.py)."""
    p = tmp_path / "root.h5"
    with h5py.File(p, "w", libver="earliest") as f:
        f["\u00e9"] = np.ones(3, "f4")  # a UTF-8 link name: a new-style root group
        f.attrs["a"] = 1
    raw = bytearray(p.read_bytes())
    # message type 2 (link info), 24 bytes, version 0, flags 0, heap and B-tree undefined
    i = raw.find(b"\x02\x00\x18\x00" + bytes(6) + b"\xff" * 16)
    assert i > 0
    raw[i + 18:i + 26] = (0x01FF0CFFFFFFFFFF).to_bytes(8, "little")  # the B-tree address
    p.write_bytes(raw)
    assert h5py_tree(p) == "error"
    assert lean_trees([p])[str(p)] is None


def test_inspect_imports_neither_numpy_nor_h5py(tmp_path):
    """The command itself (no fork, so the modules are visible) on a plain weight file."""
    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        for i in range(3):
            f[f"dense_{i}/kernel"] = np.ones((4, 4), "f4")
    code = ("import sys\nfrom wtransplant_cli.main import main\n"
            "try:\n    main(['inspect', sys.argv[1]])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('IMPORTED', sorted(m for m in ('numpy', 'h5py', 'keras', 'tensorflow')"
            " if m in sys.modules))")
    env = {**os.environ, "WTRANSPLANT_NO_WATCHDOG": "1"}
    env.pop("WTRANSPLANT_NO_FASTH5", None)
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "dense_2/" in r.stdout and "kernel  float32 (4, 4)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "IMPORTED []"


def test_cli_output_identical_either_way():
    files = [ROOT / "fixtures/torch/torch_cnn.h5", ROOT / "fixtures/keras2/k2_cnn_model.h5",
             ROOT / "fixtures/octave/octave_mlp.h5"]
    wt = [str(Path(sys.executable).parent / "wtransplant")]
    for f in files:
        outs = []
        for off in ("", "1"):
            env = {**os.environ, "WTRANSPLANT_NO_FASTH5": off}
            if not off:
                env.pop("WTRANSPLANT_NO_FASTH5")
            r = subprocess.run([*wt, "inspect", "--json", str(f)], capture_output=True,
                               text=True, env=env, timeout=120)
            assert r.returncode == 0, r.stderr
            outs.append(r.stdout)
        assert outs[0] == outs[1], f


def test_one_hdf5_library_after_h5py_import(tmp_path):
    """The lean walk loads h5py's own library file: importing h5py afterwards in the same
    process maps no second copy (two copies would have two global states)."""
    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3.0)
    code = f"""
import os, re
from wtransplant.reading.h5lean import walk_lean
assert walk_lean({str(p)!r}, "w", file_size=1, head=b"", in_memory=False) is not None
import h5py
with h5py.File({str(p)!r}, "r") as f:
    assert f["x"][2] == 2.0
libs = set()
with open("/proc/self/maps") as fh:
    for line in fh:
        name = line.split()[-1]
        if re.search(r"libhdf5-[0-9a-f]+\\.so", os.path.basename(name)):
            libs.add(os.stat(name).st_ino)
print(len(libs))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "1"


def test_filter_and_layout_names_are_hdf5s_codes():
    from h5py import h5d, h5z

    from wtransplant.reading.tree import FILTER_NAMES, LAYOUT_NAMES

    assert [FILTER_NAMES[c] for c in (h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE,
                                      h5z.FILTER_FLETCHER32, h5z.FILTER_SZIP,
                                      h5z.FILTER_NBIT, h5z.FILTER_SCALEOFFSET)] == [
        "gzip", "shuffle", "fletcher32", "szip", "nbit", "scaleoffset"]
    assert [LAYOUT_NAMES[c] for c in (h5d.COMPACT, h5d.CONTIGUOUS, h5d.CHUNKED,
                                      h5d.VIRTUAL)] == [
        "compact", "contiguous", "chunked", "virtual"]


def test_steps_aside_while_another_thread_runs(tmp_path):
    """HDF5 in h5py's wheels is not thread-safe and h5py's lock does not cover this walk:
    with a second Python thread alive (which could import h5py and call HDF5), it does not
    run."""
    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3.0)
    code = f"""
import threading
from wtransplant.reading.h5lean import walk_lean
args = ({str(p)!r}, "w")
kw = dict(file_size=1, head=b"", in_memory=False)
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
busy = walk_lean(*args, **kw)
stop.set()
t.join()
print(busy is None, walk_lean(*args, **kw) is not None)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "True"]
