"""Issue 16: sources that are not HDF5 -- the Source interface, .safetensors, .npz/.npy.

Fixtures: fixtures/safetensors/ and fixtures/npz/ (written by the ``safetensors`` package
and ``numpy.savez`` from PyTorch state_dicts: fixtures/make_torch_sources.py),
fixtures/sources/ (PyTorch-written weights re-serialised by fixtures/make_sources.py),
fixtures/hostile/st_*.safetensors and npz_pickled.npz (fixtures/make_hostile.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import assert_one_line_error, fx, run_cli

from wtransplant.errors import InputError
from wtransplant.reading.sources import open_source

# --------------------------------------------------------------------------------------
# choosing the implementation by content


@pytest.mark.parametrize("rel,container", [
    ("safetensors/torch_cnn.safetensors", "safetensors"),
    ("npz/torch_mlp.npz", "npz"),
    ("sources/vector.npy", "npy"),
    ("torch/torch_cnn.h5", "hdf5"),
    ("keras3/k3_mlp.keras", "keras-archive"),
])
def test_container_chosen_by_bytes_not_suffix(tmp_path, rel, container):
    # the same bytes under a misleading name are read the same way
    for name in (fx(rel).name, "weights.h5" if container != "hdf5" else "weights.safetensors"):
        p = tmp_path / name
        shutil.copy(fx(rel), p)
        with open_source(p) as src:
            assert src.container == container
            assert src.tensors()


def test_not_a_source_is_one_line():
    r = run_cli("inspect", fx("README.md"))
    assert_one_line_error(r, 2, "not an HDF5 file")


# --------------------------------------------------------------------------------------
# inspect: same output shape and --json schema


H5_KEYS = None


def _h5_keys():
    global H5_KEYS
    if H5_KEYS is None:
        r = run_cli("inspect", "--json", fx("torch/torch_cnn.h5"))
        H5_KEYS = set(json.loads(r.stdout))
    return H5_KEYS


@pytest.mark.parametrize("rel,fmt,conv,writer", [
    ("safetensors/torch_cnn.safetensors", "safetensors", "torch", "PyTorch"),
    ("npz/torch_mlp.npz", "npz", "torch", "np.savez"),
    ("npz/torch_mlp_positional.npz", "npz", "plain", "np.savez"),
    ("sources/vector.npy", "npy", "plain", "np.save"),
])
def test_inspect_json_same_schema(rel, fmt, conv, writer):
    r = run_cli("inspect", "--json", fx(rel))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) == _h5_keys()
    assert (d["format"], d["convention"]) == (fmt, conv)
    assert writer in d["writer"]
    assert d["container"] == fmt
    for row in d["tensors"]:
        assert {"path", "shape", "dtype"} <= set(row) and row["path"].startswith("/")


def test_safetensors_lists_what_torch_wrote():
    """The real writer's file lists the state_dict of the same module as the h5py dump."""
    from wtransplant.reading.inspecting import inspect_file

    st = {t.name: (t.shape, t.dtype) for t in inspect_file(
        fx("safetensors/torch_cnn.safetensors")).tensors}
    h5 = {t.name: (t.shape, t.dtype) for t in inspect_file(fx("torch/torch_cnn.h5")).tensors}
    assert st == h5
    rep = inspect_file(fx("safetensors/torch_cnn.safetensors"))
    assert rep.tree.root_attrs == {"format": "pt"}  # __metadata__
    assert [lh.proposal.keras_class for lh in rep.hints.layers if lh.proposal] == [
        "Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization", "Dense", "Dense"]


def test_values_are_the_writers():
    """Re-serialised PyTorch tensors read back as h5py reads the original."""
    import h5py

    with h5py.File(fx("torch/torch_cnn.h5"), "r") as f, \
            open_source(fx("sources/torch_cnn.safetensors")) as st, \
            open_source(fx("sources/torch_cnn.npz")) as nz:
        for name in f:
            want = f[name][()]
            for src in (st, nz):
                got = src.read(name)
                assert got.shape == want.shape and got.dtype == want.dtype
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
                assert got.flags.writeable and got.flags.c_contiguous


def test_dtypes_bf16_and_friends():
    with open_source(fx("sources/dtypes.safetensors")) as src:
        tree = src.tree()
        assert tree.datasets["/bf16"].dtype == "bfloat16"
        bf = src.read("bf16")
        assert bf.dtype == np.float32
        np.testing.assert_allclose(bf, [1.0, -2.5, 0.15625, 2.0 ** 100], rtol=1e-7)
        assert src.stored_type("bf16") == (np.dtype(np.float32), (4,))
        np.testing.assert_allclose(src.read("/f16"), [0.5, -1.0], rtol=1e-3)
        assert src.read("flags").tolist() == [True, False]
        assert src.read("u8").dtype == np.uint8 and src.read("i64").tolist() == [7]
        with pytest.raises(InputError, match="'nope'"):
            src.read("nope")


def test_npy_fortran_order_and_limit():
    with open_source(fx("sources/vector.npy")) as src:
        a = src.read("vector")
        np.testing.assert_allclose(a, np.arange(6, dtype=np.float32).reshape(2, 3), atol=1e-7)
        with pytest.raises(InputError, match=r"vector has shape \(2, 3\).*limit"):
            src.read("vector", limit=8)
    with open_source(fx("safetensors/torch_cnn.safetensors")) as src:
        with pytest.raises(InputError, match="classifier.1.weight.*limit for one tensor"):
            src.read("classifier.1.weight", limit=1024)


def test_stats_from_memory_maps():
    r = run_cli("inspect", "--json", "--stats", fx("sources/torch_cnn.safetensors"))
    assert r.returncode == 0, r.stderr
    rows = {t["path"]: t["stats"] for t in json.loads(r.stdout)["tensors"]}
    with open_source(fx("sources/torch_cnn.npz")) as src:
        w = src.read("classifier.1.weight").astype(np.float64)
    s = rows["/classifier.1.weight"]
    assert s["count"] == w.size
    np.testing.assert_allclose([s["mean"], s["std"], s["min"], s["max"]],
                               [w.mean(), w.std(), w.min(), w.max()], rtol=1e-6, atol=1e-9)


def test_references_into_a_safetensors_file():
    from wtransplant.checking.data import load_array

    a = load_array(f"{fx('sources/dtypes.safetensors')}:f64")
    np.testing.assert_allclose(a, [[1.0, 2.0], [3.0, 4.0]], atol=1e-12)


# --------------------------------------------------------------------------------------
# spec and rebuild, against the writer's outputs


def test_spec_settles_npz_and_rebuilds(tmp_path):
    """numpy.savez of a PyTorch MLP, keyword and positional names: the draft settled by
    the writer's data names the right tensors and rebuilds to torch's outputs < 1e-5."""
    from wtransplant import rebuild
    from wtransplant.planning.draft import draft_spec

    io = fx("npz/torch_mlp.io.npz")
    for rel in ("npz/torch_mlp.npz", "npz/torch_mlp_positional.npz"):
        d = draft_spec(fx(rel), spec_dir=tmp_path, inputs=f"{io}:x", expected=f"{io}:y")
        assert d.rebuildable, d.text
        assert "relu" in d.text and "tanh" in d.text
        spec = tmp_path / (fx(rel).stem + ".yaml")
        spec.write_text(d.text)
        _, rep = rebuild(spec, output=None)
        assert rep.parity.passed and rep.parity.max_abs < 1e-5, rep.parity


@pytest.mark.parametrize("spec,source", [
    ("safetensors_torch_cnn", "safetensors"),
    ("src_torch_cnn_safetensors", "safetensors"),
    ("src_torch_cnn_npz", "npz"),
    ("src_torch_gru_safetensors", "safetensors"),
    ("src_layered_mlp_npz", "npz"),
])
def test_rebuild_matches_the_writers_outputs(spec, source):
    from wtransplant import rebuild

    _, rep = rebuild(fx(f"specs/{spec}.yaml"), output=None)
    assert rep.parity.kind == "data"
    assert rep.parity.passed and rep.parity.max_abs < 1e-5, rep.parity


def test_rebuild_cli_on_safetensors(tmp_path):
    out = tmp_path / "m.keras"
    r = run_cli("rebuild", "--spec", fx("specs/safetensors_torch_cnn.yaml"), "-o", out,
                "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["parity"]["passed"] and rep["parity"]["max_abs"] < 1e-5
    assert out.exists()


# --------------------------------------------------------------------------------------
# hostile containers: one line, exit 2, file and tensor named, nothing allocated

HOSTILE = {
    "hostile/st_header_huge.safetensors": "header length 1099511627776 bytes",
    "hostile/st_header_past_end.safetensors": "runs past the end of the file",
    "hostile/st_offsets_past_end.safetensors": "tensor 'w': data_offsets [0, 4000] reach "
                                               "past the end",
    "hostile/st_overlap.safetensors": "tensors 'a' [0, 16] and 'b' [8, 24] overlap",
    "hostile/st_100gb.safetensors": "tensor 'huge': data_offsets [0, 100000000000] reach",
    "hostile/st_size_mismatch.safetensors": "tensor 'huge': shape (25000000000,) F32 needs",
    "hostile/st_unknown_dtype.safetensors": "tensor 'w': unknown dtype 'F128'",
    "hostile/st_duplicate.safetensors": "names 'w' twice",
    "hostile/st_polyglot.safetensors": "both safetensors and HDF5 (superblock at offset 512)",
    "hostile/npz_pickled.npz": "obj.npy: holds Python objects (pickles)",
    "hostile/huge_rows.npy": "declares shape (100000000000, 10)",
}


@pytest.mark.parametrize("rel", sorted(HOSTILE))
def test_hostile_containers_refused(rel):
    from wtransplant.reading.inspecting import inspect_file

    with pytest.raises(InputError) as ei:
        inspect_file(fx(rel))
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(fx(rel)))
    assert HOSTILE[rel] in msg, msg


@pytest.mark.parametrize("cmd", ["inspect", "spec"])
@pytest.mark.parametrize("rel", ["hostile/st_overlap.safetensors", "hostile/npz_pickled.npz"])
def test_hostile_containers_on_the_command_line(tmp_path, cmd, rel):
    args = [cmd, fx(rel)] + (["-o", tmp_path / "s.yaml"] if cmd == "spec" else [])
    assert_one_line_error(run_cli(*args), 2, HOSTILE[rel])
    assert not (tmp_path / "s.yaml").exists()


def _limited(mem_bytes: int):
    def pre():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    return pre


@pytest.mark.parametrize("rel", ["hostile/st_100gb.safetensors",
                                 "hostile/st_size_mismatch.safetensors"])
def test_100gb_declared_tensor_refused_before_allocation(rel):
    """Under a 2 GiB address-space limit a 100 GB allocation (or mapping) would fail with
    MemoryError; the refusal comes first, from the header alone."""
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "wtransplant")
    for args in (["inspect", "--stats", fx(rel)], ["spec", fx(rel), "-o", "/dev/null"]):
        r = subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                           timeout=120, preexec_fn=_limited(2 << 30))
        assert_one_line_error(r, 2, "refused before allocating", "'huge'")


def test_cast_block_by_block_hashes_the_stored_values(monkeypatch):
    """read_as (the planner's cast while reading) gives read()'s values cast, and feeds
    the checksum exactly the stored values, however many blocks it takes."""
    import wtransplant.reading.sources.safetensors as st
    from wtransplant.planning.plan import array_hasher, sha256_array

    monkeypatch.setattr(st, "READ_BLOCK_BYTES", 64)
    with open_source(fx("sources/torch_cnn.safetensors")) as src:
        for name, want in (("classifier.1.weight", np.float16), ("features.0.weight",
                                                                 np.float64)):
            a = src.read(name)
            h = array_hasher(a.dtype, a.shape)
            b = src.read_as(name, want, hasher=h)
            assert b.dtype == want and b.shape == a.shape
            assert h.hexdigest() == sha256_array(a)
            np.testing.assert_allclose(b, a.astype(want), rtol=1e-7, atol=0)
