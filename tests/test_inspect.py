"""wtransplant inspect: formats, trees, hints, stats and bad input, on real writers' files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, cli_json, fx, run_cli, sha256

from wtransplant.errors import InputError, UnsafeInputError
from wtransplant.reading.h5io import open_source, read_dataset
from wtransplant.reading.inspecting import inspect_file

# (fixture, format, writer substring): each file was written by the program named in
# fixtures/README.md
FORMATS = [
    ("torch/torch_cnn.h5", "torch-state-dict", "PyTorch"),
    ("torch/torch_lstm.h5", "torch-state-dict", "PyTorch"),  # dumped as nested groups
    ("octave/octave_mlp.h5", "octave", "GNU Octave 7.3.0"),
    ("matlab/matlab73_mlp.mat", "matlab-v7.3", "hdf5storage"),
    ("keras2/k2_mlp_weights.h5", "keras-legacy-weights", "Keras 2."),
    ("keras2/k2_mobilenetv2_weights.h5", "keras-legacy-weights", "Keras 2."),
    ("keras2/k2_cnn_model.h5", "keras-legacy-model", "Keras 2."),
    ("keras2/k2_rnn_model.h5", "keras-legacy-model", "Keras 2."),
    ("keras3/k3_mlp.weights.h5", "keras3-weights", None),
    ("keras3/k3_mlp.keras", "keras3-archive", "Keras 3."),
    ("layered/layered_mlp.h5", "layered", None),
    ("data/digits.h5", "generic-hdf5", None),
]


def h5py_numeric(path):
    """Every numeric dataset of an HDF5 file, by an independent walk with h5py's
    high-level API: {path: (shape, dtype)}."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub" and not obj.is_virtual:
            out["/" + name] = (list(obj.shape), obj.dtype)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


@pytest.mark.parametrize("rel,fmt,writer", FORMATS)
def test_format_detected_with_evidence(rel, fmt, writer):
    rep = inspect_file(fx(rel))
    assert rep.format == fmt, rep.detection.evidence
    assert rep.detection.evidence
    if writer:
        assert writer in (rep.detection.writer or ""), rep.detection.writer


@pytest.mark.parametrize("rel", [r for r, _, _ in FORMATS if not r.endswith(".keras")])
def test_json_lists_every_numeric_dataset_as_written(rel):
    data = cli_json("inspect", fx(rel))
    assert data["format"] in {f for _, f, _ in FORMATS}
    got = {t["path"]: (t["shape"], t["dtype"]) for t in data["tensors"]}
    want = h5py_numeric(fx(rel))
    assert set(got) == set(want)
    for p, (shape, dtype) in want.items():
        assert got[p][0] == shape, p
        assert np.dtype(got[p][1].replace("bool", "?")) == dtype or dtype.kind == "b", p


def test_keras_archive_inner_weights_and_config():
    data = cli_json("inspect", fx("keras3/k3_mlp.keras"))
    assert data["format"] == "keras3-archive"
    assert {"config.json", "model.weights.h5"} <= set(data["archive"]["members"])
    assert data["archive"]["metadata"]["keras_version"].startswith("3.")
    # the inner weights file's tensors are listed with their shapes
    shapes = sorted(tuple(t["shape"]) for t in data["tensors"])
    assert (5, 7) in shapes and (7, 7) in shapes and (7, 2) in shapes


def test_matlab_shapes_in_both_views():
    rep = inspect_file(fx("matlab/matlab73_mlp.mat"))
    rows = {r["name"]: r for r in rep.tensor_rows() if "name" in r}
    with h5py.File(fx("matlab/matlab73_mlp.mat"), "r") as f:
        stored = f["net/W1"].shape
    assert rows["net.W1"]["shape"] == list(stored)
    assert rows["net.W1"]["matlab_shape"] == list(reversed(stored)) == [16, 6]
    # struct fields get MATLAB names; cell arrays and char arrays are not tensors
    names = {t.name for t in rep.tensors}
    assert {"net.W1", "net.b1", "net.W2", "net.b2", "X", "Y"} <= names
    assert "description" not in names


def test_octave_variables_and_views():
    rep = inspect_file(fx("octave/octave_mlp.h5"))
    t = {x.name: x for x in rep.tensors}
    assert t["W1"].shape == (8, 4) and t["W1"].stored_shape == (4, 8)
    assert t["W2"].shape == (8, 8)
    assert rep.hints.io == {"inputs": "X", "expected": "Y"}
    assert rep.hints.chain == [4, 8, 8, 3]


def test_hints_layered_chain_and_orientation():
    rep = inspect_file(fx("layered/layered_mlp.h5"))
    h = rep.hints
    with h5py.File(fx("layered/layered_mlp.h5"), "r") as f:
        w = [f[f"Weights/Layer{i}"].shape for i in (1, 2, 3)]
    # stored out-by-in: the chain is in=w1[1], then each layer's rows
    assert h.chain == [w[0][1], w[0][0], w[1][0], w[2][0]]
    assert h.orientation == "out-by-in"
    assert [lh.proposal.keras_class for lh in h.layers] == ["Dense"] * 3
    assert h.io == {"inputs": "io/x", "expected": "io/y"}


def test_hints_torch_cnn_order_flatten_and_bn():
    h = inspect_file(fx("torch/torch_cnn.h5")).hints
    units = [lh.unit for lh in h.layers]
    # HDF5 lists 'classifier' before 'features'; the hint restores the module order
    assert units == ["features.0", "features.1", "features.4", "features.5", "classifier.1",
                     "classifier.3"]
    kinds = [lh.proposal.keras_class for lh in h.layers]
    assert kinds == ["Conv2D", "BatchNormalization", "Conv2D", "BatchNormalization",
                     "Dense", "Dense"]
    assert any("Flatten of a 16x4x4 map" in n for n in h.layers[4].notes)
    assert set(h.ignored) == {"features.1.num_batches_tracked",
                              "features.5.num_batches_tracked"}


@pytest.mark.parametrize("rel,cls,units", [("torch/torch_gru.h5", "GRU", 8),
                                           ("torch/torch_lstm.h5", "LSTM", 8)])
def test_hints_rnn_gate_stacks(rel, cls, units):
    h = inspect_file(fx(rel)).hints
    p = h.layers[0].proposal
    assert (p.keras_class, p.args["units"]) == (cls, units)
    assert h.layers[1].proposal.keras_class == "Dense"


def test_hints_bidirectional_and_stacked_rnn_from_torch():
    h = inspect_file(fx("torch/torch_layers.h5")).hints
    by = {lh.unit: lh.proposal for lh in h.layers}
    assert by["bigru#l0"].keras_class == "Bidirectional"
    assert by["bigru#l0"].args["layer"]["class"] == "GRU"
    assert by["lstm2#l0"].keras_class == by["lstm2#l1"].keras_class == "LSTM"
    assert by["rnn#l0"].keras_class == "SimpleRNN"


def test_stats_match_numpy_and_are_blockwise(tmp_path):
    path = tmp_path / "chunked.h5"
    rng = np.random.default_rng(0)
    a = rng.normal(3.0, 2.0, size=(1000, 37)).astype(np.float32)
    a[5, 3] = np.nan
    a[7, 1] = np.inf
    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=a, chunks=(64, 37), compression="gzip")
    from wtransplant.reading.stats import _blocks, tensor_stats

    with open_source(path) as src:
        blocks = list(_blocks(src.h5["w"], block_bytes=64 * 37 * 4 * 2))
        assert len(blocks) > 5  # really read in pieces
        st = tensor_stats(src, "/w", block_bytes=64 * 37 * 4 * 2)
    fin = a[np.isfinite(a)].astype(np.float64)
    assert (st.nan, st.inf, st.count) == (1, 1, a.size)
    assert st.min == pytest.approx(fin.min()) and st.max == pytest.approx(fin.max())
    assert st.mean == pytest.approx(fin.mean(), rel=1e-9)
    assert st.std == pytest.approx(fin.std(), rel=1e-6)


def test_cli_stats_filter_and_depth():
    r = run_cli("inspect", fx("torch/torch_cnn.h5"), "--stats", "--filter", "*.running_var")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "float32" in ln]
    assert len(lines) == 2 and all("running_var" in ln and "min" in ln for ln in lines)
    r = run_cli("inspect", fx("keras2/k2_cnn_model.h5"), "--depth", "1")
    assert r.returncode == 0, r.stderr
    assert "datasets below" in r.stdout and "kernel:0" not in r.stdout


def test_huge_declared_shape_is_reported_and_never_read():
    rep = inspect_file(fx("broken/huge_shape.h5"), stats=True)
    assert any("refused on read" in w for w in rep.warnings)
    huge = next(p for p, d in rep.tree.datasets.items() if d.shape == (10**12,))
    assert rep.stats[huge].skipped
    with open_source(fx("broken/huge_shape.h5")) as src, pytest.raises(UnsafeInputError):
        read_dataset(src, huge)


def test_external_link_and_vds_reported_not_followed():
    r = run_cli("inspect", fx("broken/external_link.h5"))
    assert "external link target.h5:/data" in r.stdout
    assert_one_line_error(r, 2, "external_link.h5", "/secret", "--follow-links")
    r = run_cli("inspect", fx("broken/vds_outside.h5"))
    assert_one_line_error(r, 2, "vds_outside.h5", "virtual dataset", "target.h5")
    with open_source(fx("broken/external_link.h5")) as src, pytest.raises(UnsafeInputError):
        read_dataset(src, "/secret")
    with open_source(fx("broken/vds_outside.h5")) as src, pytest.raises(UnsafeInputError):
        read_dataset(src, "/virtual")
    # followed only when asked
    r = run_cli("inspect", fx("broken/external_link.h5"), "--follow-links")
    assert r.returncode == 0, r.stderr
    with open_source(fx("broken/external_link.h5"), follow_links=True) as src:
        with h5py.File(fx("broken/target.h5"), "r") as f:
            np.testing.assert_array_equal(read_dataset(src, "/secret"), f["data"][()])


def test_soft_link_cycle_terminates_and_aliases_are_marked():
    rep = inspect_file(fx("broken/soft_links.h5"))
    kinds = {ln.kind for ln in rep.tree.links.values()}
    assert "soft" in kinds
    assert any(ln.resolves_to is None for ln in rep.tree.links.values())  # dangling
    assert any(g.alias_of for g in rep.tree.groups.values()) or any(
        d.alias_of for d in rep.tree.datasets.values())


def test_attributes_decoded():
    rep = inspect_file(fx("broken/attrs.h5"))
    attrs = {}
    for node in list(rep.tree.datasets.values()) + list(rep.tree.groups.values()):
        attrs.update(node.attrs)
    json.dumps(attrs)  # JSON-serialisable
    with h5py.File(fx("broken/attrs.h5"), "r") as f:
        raw = {}
        f.visititems(lambda n, o: raw.update(dict(o.attrs)))
    for k, v in raw.items():
        got = attrs[k]
        if isinstance(v, bytes | np.bytes_):
            assert got == bytes(v).decode()
        elif isinstance(v, str):
            assert got == v
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fi" and v.size <= 32:
            assert got == v.tolist()
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fi":
            assert isinstance(got, str) and str(v.shape) in got  # summarised, not dumped


def test_references_shown_as_references():
    rep = inspect_file(fx("broken/references.h5"))
    vals = [v for n in (*rep.tree.datasets.values(), *rep.tree.groups.values())
            for v in n.attrs.values()]
    flat = json.dumps(vals)
    assert "reference ->" in flat
    assert any(d.kind == "reference" for d in rep.tree.datasets.values())


BAD = [
    ("broken/empty.h5", "empty file"),
    ("broken/not_hdf5.h5", "not an HDF5 file"),
    ("broken/truncated.h5", "truncated or corrupt"),
    ("broken/not_keras.keras", "not a Keras archive"),
    ("broken/zip_slip.keras", "escapes the archive"),
]


@pytest.mark.parametrize("rel,why", BAD)
def test_bad_input_one_line_exit_2(rel, why):
    r = run_cli("inspect", fx(rel))
    assert_one_line_error(r, 2, str(fx(rel)), why)


def test_missing_file_and_directory():
    assert_one_line_error(run_cli("inspect", "/nonexistent/w.h5"), 2, "no such file")
    assert_one_line_error(run_cli("inspect", fx("torch")), 2, "directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_copy):
    p = tmp_copy("torch/torch_cnn.h5")
    p.chmod(0)
    assert_one_line_error(run_cli("inspect", p), 2, "permission denied")


def test_input_never_modified(tmp_copy):
    p = tmp_copy("matlab/matlab73_mlp.mat")
    before = (sha256(p), p.stat().st_mtime_ns)
    p.chmod(0o444)  # read-only: any write attempt would fail loudly
    assert run_cli("inspect", p, "--stats").returncode == 0
    assert run_cli("inspect", p, "--json").returncode == 0
    assert (sha256(p), p.stat().st_mtime_ns) == before


def test_no_tensorflow_or_keras_on_import_or_inspect():
    code = (
        "import sys, wtransplant, wtransplant.reading.inspecting\n"
        "from click.testing import CliRunner\n"
        "from wtransplant_cli.main import main\n"
        f"r = CliRunner().invoke(main, ['inspect', {str(fx('torch/torch_cnn.h5'))!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules]\n"
        "print(','.join(bad) or 'none')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "none"


def test_readers_errors_are_input_errors():
    with pytest.raises(InputError):
        inspect_file(fx("broken/empty.h5"))


ALL_H5 = sorted(str(p.relative_to(fx("."))) for p in fx(".").rglob("*")
                if p.suffix in (".h5", ".mat") and p.stat().st_size > 0
                and p.name not in ("truncated.h5", "not_hdf5.h5")
                and not p.name.startswith("polyglot"))  # refused on open (issue 12)


@pytest.mark.parametrize("rel", ALL_H5)
def test_fast_probe_and_h5py_walk_agree(rel, monkeypatch):
    """The ctypes fast path of the walk is an optimisation: it must give the same tree."""
    from wtransplant.reading import _fasth5
    from wtransplant.reading.tree import walk

    assert _fasth5._load() is not None, "fast path unavailable on this platform"
    monkeypatch.setattr(_fasth5, "FAST_MIN", 0)
    with open_source(fx(rel)) as src:
        fast = walk(src).to_dict()
    monkeypatch.setattr(_fasth5, "_lib", None)
    monkeypatch.setattr(_fasth5, "_failed", True)
    with open_source(fx(rel)) as src:
        slow = walk(src).to_dict()
    assert fast == slow


def test_fast_probe_uses_the_library_h5py_loaded():
    """The probe calls the HDF5 library already in the process (h5py's), never a second
    copy: no new libhdf5 mapping appears when it loads; its version is h5py's."""
    import ctypes

    from wtransplant.reading import _fasth5

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")

    def mapped():
        with open("/proc/self/maps") as f:
            return {ln.split(None, 5)[5].strip() for ln in f if len(ln.split(None, 5)) == 6
                    and _fasth5._LIBNAME.match(os.path.basename(ln.split(None, 5)[5].strip()))}

    before = mapped()
    assert before, "h5py's HDF5 library is not mapped"
    _fasth5._lib, _fasth5._failed = None, False
    _fasth5._hdf5, _fasth5._hdf5_searched = None, False   # search again
    lib = _fasth5._load()
    assert lib is not None
    assert mapped() == before
    maj, mnr, rel = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
    h5lib = ctypes.CDLL(sorted(before)[0], mode=os.RTLD_NOLOAD)
    h5lib.H5get_libversion(ctypes.byref(maj), ctypes.byref(mnr), ctypes.byref(rel))
    assert (maj.value, mnr.value, rel.value) == h5py.version.hdf5_version_tuple[:3]


def test_fast_probe_off_without_h5py_lock(monkeypatch):
    """No h5py global lock to hold (a future h5py): the walk uses h5py alone, same tree."""
    from wtransplant.reading import _fasth5
    from wtransplant.reading.tree import walk

    with open_source(fx("torch/torch_cnn.h5")) as src:
        want = walk(src).to_dict()
    monkeypatch.setattr(_fasth5, "_lib", None)
    monkeypatch.setattr(_fasth5, "_failed", False)
    monkeypatch.setattr(_fasth5, "FAST_MIN", 0)
    monkeypatch.setattr(_fasth5, "phil", lambda: None)
    assert _fasth5._load() is None
    with open_source(fx("torch/torch_cnn.h5")) as src:
        assert walk(src).to_dict() == want


def test_inspect_into_a_closed_pipe_stops_quietly(tmp_path):
    # `wtransplant inspect F | head -c 10`: the reader leaves early (the tree is far more
    # than a pipe's buffer); no "internal error", exit 0
    import subprocess

    big = tmp_path / "many.h5"
    with h5py.File(big, "w") as f:
        for i in range(3000):
            f[f"layer_{i:04d}/kernel"] = np.zeros((2, 2), np.float32)
    cmd = f"'{sys.executable}' -m wtransplant_cli.main inspect '{big}' | head -c 10 " \
          f"> /dev/null; echo ${{PIPESTATUS[0]}}"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "0", (r.stdout, r.stderr)
    assert "error" not in r.stderr.lower(), r.stderr
