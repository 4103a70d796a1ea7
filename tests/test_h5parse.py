"""The pure-Python metadata reader (reading/h5parse.py) gives the h5py walk's tree exactly,
or steps aside (None): on every HDF5 fixture, on files written here in and out of its
scope, when read piece by piece instead of whole, on truncated and byte-flipped files,
and in a fresh interpreter that loads neither NumPy, h5py nor the HDF5 library."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_h5lean import FIXTURES, _edge_file, h5py_tree, spacepad_attr

from wtransplant.reading import h5parse

ROOT = Path(__file__).resolve().parents[1]


def parsed(path) -> dict | None:
    t = h5parse.walk_parsed(str(path), str(path), file_size=os.path.getsize(path))
    return None if t is None else {"tree": t.to_dict(), "comment": t.comment,
                                   "userblock": t.userblock.hex()}


#: files of each writer that must take the fast path (the classic format)
MUST_PARSE = ["keras2/k2_cnn_model.h5", "keras2/k2_rnn_model.h5", "torch/torch_cnn.h5",
              "octave/octave_mlp.h5", "matlab/matlab73_mlp.mat"]


def test_every_fixture_same_tree_or_steps_aside():
    took = []
    for p in FIXTURES:
        got = parsed(p)
        if got is None:
            continue
        ref = h5py_tree(p)
        if ref == "refused":
            continue  # a polyglot: opening refuses it before any walk (tested elsewhere)
        assert ref != "error", f"{p}: a tree where h5py's walk fails"
        assert got == ref, p
        took.append(str(p.relative_to(ROOT / "fixtures")))
    for name in MUST_PARSE:
        assert name in took, f"{name} left to the library"
    assert len(took) >= 35, len(took)


def test_edge_cases_same_tree(tmp_path):
    p = tmp_path / "edges.h5"
    _edge_file(p, ordered=False)
    got = parsed(p)
    assert got is not None, "stepped aside on the classic format"
    assert got == h5py_tree(p)
    attrs = got["tree"]["groups"][0]["attrs"]
    assert list(attrs) == sorted(attrs)  # the library lists attributes by name
    assert attrs["fields"] == ["W1", "bx"] and attrs["one_field"] == ["a", "", "c"]
    assert attrs["vlen_list"] == ["a", "bb", ""] and attrs["u64"] == 2**64 - 1
    assert got["userblock"] == "00" * 128


def _many_file(path: Path, groups: int, per_group: int) -> None:
    """Groups large enough that their B-trees have inner nodes, and nested aliases."""
    with h5py.File(path, "w") as f:
        for g in range(groups):
            grp = f.create_group(f"g{g:03d}")
            grp.attrs["index"] = g
            for j in range(per_group):
                grp.create_dataset(f"w{j}", data=np.full((2, j % 3 + 1), j, np.float32))
        f["g000/sub/deeper"] = np.arange(3, dtype=np.int16)
        f["again"] = f["g001"]  # a second link to a group: listed, not descended
        f["g002/same"] = f["g000/w1"]


def test_multi_level_btrees_and_aliases(tmp_path):
    p = tmp_path / "many.h5"
    _many_file(p, groups=80, per_group=150)
    got = parsed(p)
    assert got is not None
    assert got == h5py_tree(p)
    groups = {g["path"]: g for g in got["tree"]["groups"]}
    assert groups["/g001"]["alias_of"] == "/again"  # name order: "again" comes first
    assert groups["/g001"]["children"] == 0
    assert len(got["tree"]["datasets"]) == 80 * 150 + 2


def test_read_piece_by_piece_same_as_whole(tmp_path, monkeypatch):
    """Files over WHOLE_FILE are read with pread per structure: the same trees."""
    p = tmp_path / "edges.h5"
    _edge_file(p, ordered=False)
    files = [p] + [ROOT / "fixtures" / n for n in MUST_PARSE]
    whole = [parsed(f) for f in files]
    monkeypatch.setattr(h5parse, "WHOLE_FILE", 0)
    assert [parsed(f) for f in files] == whole
    assert all(w is not None for w in whole)


def test_large_file_reads_metadata_only(tmp_path, monkeypatch):
    """Over WHOLE_FILE, only metadata is read: never a dataset's bytes."""
    p = tmp_path / "big.h5"
    with h5py.File(p, "w") as f:
        f["dense/kernel"] = np.ones((1024, 2048), "f4")  # 8 MiB contiguous
        f.create_dataset("conv/kernel", data=np.ones((512, 2048), "f4"), chunks=(64, 2048))
    sizes: list[int] = []
    real = os.pread

    def pread(fd, n, offset):
        sizes.append(n)
        return real(fd, n, offset)

    monkeypatch.setattr(h5parse, "WHOLE_FILE", 1 << 20)
    monkeypatch.setattr(h5parse.os, "pread", pread)
    got = parsed(p)
    assert got == h5py_tree(p)
    assert sizes and max(sizes) <= 64 << 10, max(sizes)


@pytest.mark.parametrize("what", ["track_order", "latest", "soft", "compound", "enum",
                                  "region", "bool_attr", "spacepad", "external_storage"])
def test_steps_aside_outside_its_scope(tmp_path, what):
    p = tmp_path / f"{what}.h5"
    with h5py.File(p, "w", libver="latest" if what == "latest" else "earliest",
                   track_order=what == "track_order") as f:
        f["x"] = np.ones(3, "f4")
        if what == "soft":
            f["s"] = h5py.SoftLink("/x")
        elif what == "compound":
            f["c"] = np.zeros(2, [("a", "f4"), ("b", "i4")])
        elif what == "enum":
            f["b"] = np.array([True, False])
        elif what == "region":
            f.attrs.create("r", f["x"].regionref[0:2], dtype=h5py.regionref_dtype)
        elif what == "bool_attr":
            f.attrs["b"] = True  # an enum
        elif what == "spacepad":
            spacepad_attr(f)
        elif what == "external_storage":
            f.create_dataset("ext", shape=(4,), dtype="f4",
                             external=[(str(tmp_path / "raw.bin"), 0, 16)])
    assert parsed(p) is None


def test_damaged_files_step_aside_or_agree(tmp_path):
    """Every cut of a small file, and random byte flips in its metadata: never an
    exception, never a tree where h5py's walk fails, never a different tree."""
    src = ROOT / "fixtures/torch/torch_cnn.h5"
    raw = src.read_bytes()
    rng = random.Random(5)
    cases = [raw[:n] for n in sorted(rng.sample(range(1, len(raw)), 12))]
    meta_end = min(len(raw), 6000)  # the superblock, root group and first headers
    for _ in range(60):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(meta_end)] = rng.randrange(256)
        cases.append(bytes(b))
    took = 0
    for i, case in enumerate(cases):
        p = tmp_path / f"case{i}.h5"
        p.write_bytes(case)
        got = parsed(p)
        if got is None:
            continue
        took += 1
        # as JSON: a flip can make an attribute NaN, which is not equal to itself
        assert json.dumps(got) == json.dumps(h5py_tree(p)), f"case {i}"
    assert took > 0  # some flips land in data or unused bytes


def _targets_file(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["note"] = "a vlen string"
        f.attrs["scale"] = np.float32(0.5)
        for i in range(3):
            f[f"g/w{i}"] = np.full((2, 2), i, np.float32)
        f.create_dataset("c", data=np.arange(64, dtype=np.float32).reshape(8, 8),
                         chunks=(4, 8))
        h5py.h5o.set_comment(f.id, b"written by a test")


class _Mapped(h5parse._Walk):
    """The walk, recording where each structure it reads lies in the file."""

    def __init__(self, data):
        super().__init__(data)
        self.at_ = {"heaps": [], "btrees": [], "chunk_btrees": [], "gheaps": [],
                    "attrs": {}}

    def local_heap(self, addr):
        self.at_["heaps"].append(self.d.base + addr)
        return super().local_heap(addr)

    def btree_groups(self, addr, *a, **k):
        self.at_["btrees"].append(self.d.base + addr)
        return super().btree_groups(addr, *a, **k)

    def chunk_bytes(self, addr, *a, **k):
        self.at_["chunk_btrees"].append(self.d.base + addr)
        return super().chunk_bytes(addr, *a, **k)

    def global_heap(self, addr):
        self.at_["gheaps"].append(self.d.base + addr)
        return super().global_heap(addr)

    def attribute(self, buf, o, size):
        name, value = super().attribute(buf, o, size)
        self.at_["attrs"][name] = o
        return name, value

    def comment(self, msgs):
        self.at_["comment"] = msgs.get(h5parse.M_COMMENT)[1:]
        return super().comment(msgs)


def _where(path: Path) -> dict:
    with open(path, "rb") as fh:
        w = _Mapped(h5parse._Data(fh, os.path.getsize(path)))
        w.run()
    return w.at_


def _put(raw: bytearray, at: int, value: int, n: int = 8) -> None:
    raw[at:at + n] = value.to_bytes(n, "little")


#: one damage each, at a structure the library checks when it reads it (each found by
#: fuzzing: the parser once answered where h5py's walk failed or differed)
DAMAGE = {
    "free-space address": lambda r, w: _put(r, 32, 64),
    "root entry cache type": lambda r, w: _put(r, 72, 7, 4),
    "group K of 0": lambda r, w: _put(r, 18, 0, 2),
    "B-tree right sibling": lambda r, w: _put(r, w["btrees"][0] + 16, 64),
    "local heap free list": lambda r, w: _put(r, w["heaps"][0] + 16, 8),
    "comment without NUL": lambda r, w: r.__setitem__(
        slice(w["comment"][0], sum(w["comment"])), b"x" * w["comment"][1]),
    "empty attribute name": lambda r, w: (_put(r, w["attrs"]["scale"] + 2, 1, 2),
                                          _put(r, w["attrs"]["scale"] + 8, 0, 8)),
    "vlen type size": lambda r, w: _put(r, w["attrs"]["note"] + 16 + 4, 24, 4),
    "global heap object size": lambda r, w: _put(r, w["gheaps"][0] + 16 + 8, 12),
    "chunk key offset": lambda r, w: _put(r, w["chunk_btrees"][0] + 24 + 8, 1),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damage_the_library_checks(tmp_path, damage):
    """Each damage changes what h5py's walk gives (an error or another tree); the parser
    answers with exactly that tree or steps aside, never its own reading."""
    clean = tmp_path / "clean.h5"
    _targets_file(clean)
    assert parsed(clean) == h5py_tree(clean)
    raw = bytearray(clean.read_bytes())
    DAMAGE[damage](raw, _where(clean))
    p = tmp_path / "damaged.h5"
    p.write_bytes(bytes(raw))
    ref = h5py_tree(p)
    assert json.dumps(ref) != json.dumps(h5py_tree(clean)), "the damage changed nothing"
    got = parsed(p)
    assert got is None or json.dumps(got) == json.dumps(ref)


LEAN = """
import json, os, sys
from wtransplant.reading import h5lean
from wtransplant.reading.h5parse import walk_parsed
f = sys.argv[1]
t = walk_parsed(f, f, file_size=os.path.getsize(f))
print(json.dumps({"datasets": None if t is None else len(t.datasets),
                  "imported": sorted(m for m in ("numpy", "h5py") if m in sys.modules),
                  "library_loaded": h5lean._searched}))
"""


def test_fresh_interpreter_loads_no_hdf5_library():
    f = ROOT / "fixtures/keras2/k2_cnn_model.h5"
    r = subprocess.run([sys.executable, "-c", LEAN, str(f)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["datasets"] and out["imported"] == [] and out["library_loaded"] is False


def test_inspect_output_identical_with_fast_paths_off():
    wt = str(Path(sys.executable).parent / "wtransplant")
    for name in MUST_PARSE:
        outs = []
        for off in ("", "1"):
            env = {k: v for k, v in os.environ.items() if k != "WTRANSPLANT_NO_FASTH5"}
            if off:
                env["WTRANSPLANT_NO_FASTH5"] = off
            r = subprocess.run([wt, "inspect", "--json", str(ROOT / "fixtures" / name)],
                               capture_output=True, text=True, env=env, timeout=120)
            assert r.returncode == 0, r.stderr
            outs.append(r.stdout)
        assert outs[0] == outs[1], name
