"""Rebuild holds one copy of each tensor in flight: a source of another dtype is cast block
by block while it is read, a large variable is written a block of rows at a time, the
NaN/Inf scan runs in blocks, and the checksums are those of the whole arrays."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from wtransplant.building import keras_model  # noqa: E402
from wtransplant.building.transplanting import transplant  # noqa: E402
from wtransplant.planning import plan  # noqa: E402
from wtransplant.planning.spec import load_spec  # noqa: E402
from wtransplant.reading import h5io  # noqa: E402

LAYERS = [("dense_0", (37, 23)), ("dense_1", (23, 11))]


def _keras2_file(path, dtype, nan_at=None):
    rng = np.random.default_rng(3)
    raw = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in LAYERS]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        for name, shape in LAYERS:
            g = f.create_group(name)
            g.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            k = rng.standard_normal(shape).astype(dtype)
            b = rng.standard_normal(shape[-1:]).astype(dtype)
            if nan_at is not None and name == "dense_0":
                k.reshape(-1)[list(nan_at)] = np.nan
            g.create_group(name).create_dataset("kernel:0", data=k)
            g[name].create_dataset("bias:0", data=b)
            raw[f"{name}/kernel"], raw[f"{name}/bias"] = k, b
    return raw


def _model():
    return keras.Sequential([keras.Input((37,))] + [
        keras.layers.Dense(s[1], name=n) for n, s in LAYERS])


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of a few rows, so that the small test tensors take the blocked paths."""
    monkeypatch.setattr(h5io, "READ_BLOCK_BYTES", 64)
    monkeypatch.setattr(keras_model, "ASSIGN_BLOCK_BYTES", 64)
    monkeypatch.setattr(plan, "SCAN_BLOCK", 5)


@pytest.mark.parametrize("dtype", ["float64", ">f4", "float32"])
def test_blocked_read_cast_and_assign_match_whole_arrays(tmp_path, tiny_blocks, dtype):
    path = tmp_path / "w.h5"
    raw = _keras2_file(path, dtype)
    spec = load_spec(text=f"version: 1\nsource: {path}\nconvention: keras\n")
    model, report = transplant(_model(), spec, progress=False)
    for name, _ in LAYERS:
        lay = model.get_layer(name)
        np.testing.assert_array_equal(lay.kernel.numpy(), raw[f"{name}/kernel"].astype("float32"))
        np.testing.assert_array_equal(lay.bias.numpy(), raw[f"{name}/bias"].astype("float32"))
    rows = {c["target"]: c for c in report.checksums}
    for key, arr in raw.items():
        row = rows[key]
        # the source's checksum is that of the stored array, in the file's own dtype
        assert row["source_sha256"] == [plan.sha256_array(arr)]
        assert row["value_sha256"] == plan.sha256_array(arr.astype("float32"))
        assert row["assigned_matches"] is True


def test_nonfinite_values_counted_in_blocks(tmp_path, tiny_blocks):
    path = tmp_path / "w.h5"
    _keras2_file(path, "float64", nan_at=(0, 7, 8, 850))
    spec = load_spec(text=f"version: 1\nsource: {path}\nconvention: keras\n"
                          f"verify: {{reference: none}}\n")
    _, report = transplant(_model(), spec, progress=False)
    assert any("dense_0/kernel: 4 NaN/Inf" in w for w in report.plan.warnings), \
        report.plan.warnings


def test_count_nonfinite_blocks():
    a = np.zeros((7, 3), np.float32)
    a[0, 0], a[3, 1], a[6, 2] = np.nan, np.inf, -np.inf
    for block in (1, 2, 5, 100):
        plan.SCAN_BLOCK, old = block, plan.SCAN_BLOCK
        try:
            assert plan.count_nonfinite(a) == 3
        finally:
            plan.SCAN_BLOCK = old


def test_lazy_reference_holds_no_weights_and_matches_eager(tmp_path):
    """The parity check's NumPy reference reads each layer's float64 weights only while the
    layer runs (a float64 copy of a whole model is twice its bytes)."""
    from wtransplant.checking.reference import build_reference
    from wtransplant.reading.h5io import open_source

    path = tmp_path / "w.h5"
    _keras2_file(path, "float32")
    spec = load_spec(text=f"version: 1\nsource: {path}\nconvention: keras\n")
    model, report = transplant(_model(), spec, progress=False)
    assert report.parity is not None and report.parity.passed
    x = np.random.default_rng(0).standard_normal((5, 37)).astype(np.float32)
    with open_source(path) as src:
        eager = build_reference(model, report.plan, src)
        lazy = build_reference(model, report.plan, src, lazy=True)
        assert all(not lay.weights for lay in lazy.layers)
        assert all(lay.weights for lay in eager.layers)
        y_lazy, _ = lazy.forward(x)
        assert all(not lay.weights for lay in lazy.layers)
        y_eager, _ = eager.forward(x)
    np.testing.assert_allclose(y_lazy, y_eager, rtol=1e-12, atol=0)
