"""Each sha256 in a rebuild report is the sha256 of the bytes its name says, even where a
digest is reused instead of hashed again: ``value_sha256`` equals ``source_sha256`` only when
nothing changed the bytes, and ``assigned_sha256`` (read back from the variable) equals
``value_sha256`` only when the variable holds exactly the value's bytes. Checked on both
paths: a large unconverted tensor streamed a block of rows at a time, and a whole array."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from wtransplant.building import keras_model  # noqa: E402
from wtransplant.building.transplanting import transplant  # noqa: E402
from wtransplant.planning import plan  # noqa: E402
from wtransplant.planning.plan import same_bytes, sha256_array  # noqa: E402
from wtransplant.planning.spec import load_spec  # noqa: E402
from wtransplant.reading import h5io  # noqa: E402


@pytest.fixture(params=["whole", "rows"])
def path_kind(request, monkeypatch):
    """``rows``: blocks of a few rows, so that the small tensors take the streamed path."""
    if request.param == "rows":
        monkeypatch.setattr(h5io, "READ_BLOCK_BYTES", 64)
        monkeypatch.setattr(keras_model, "ASSIGN_BLOCK_BYTES", 64)
    return request.param


def _files(tmp_path):
    """A plain HDF5 file: a (out, in) kernel that the spec transposes, and a bias."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((23, 37)).astype(np.float32)
    b = rng.standard_normal(23).astype(np.float32)
    b[3] = 0.0  # a zero whose sign a tampered write flips: equal as floats, not as bytes
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["W"], f["b"] = w, b
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "version: 1\nsource: w.h5\nconvention: plain\n"
        "model:\n  input_shape: [37]\n  layers:\n"
        "    - {class: Dense, name: fc, units: 23}\n"
        "weights:\n  fc/kernel: {from: W, transpose: [1, 0]}\n  fc/bias: b\n"
        "verify: {reference: none}\n")
    return spec, w, b


def _model():
    return keras.Sequential([keras.Input((37,)), keras.layers.Dense(23, name="fc")])


def test_converted_value_is_hashed_as_converted(tmp_path, path_kind):
    spec, w, b = _files(tmp_path)
    model, report = transplant(_model(), load_spec(spec), progress=False)
    rows = {r["target"]: r for r in report.checksums}
    k, bias = rows["fc/kernel"], rows["fc/bias"]
    assert k["source_sha256"] == [sha256_array(w)]
    assert k["value_sha256"] == sha256_array(np.ascontiguousarray(w.T))
    assert k["value_sha256"] != k["source_sha256"][0]
    assert bias["source_sha256"] == [sha256_array(b)] and \
        bias["value_sha256"] == sha256_array(b)
    for row, var in ((k, model.get_layer("fc").kernel), (bias, model.get_layer("fc").bias)):
        assert row["assigned_matches"] is True
        assert row["assigned_sha256"] == row["value_sha256"] == sha256_array(var.numpy())


def _flip_first_sign(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.reshape(-1)[3 if a.ndim == 1 else 0] *= -1
    return a


def test_tampered_assignment_is_reported(tmp_path, path_kind, monkeypatch):
    """A write that changes the bytes (the sign of one value, a zero's included) gives
    ``assigned_matches: false`` and the sha256 of what the variable really holds."""
    real_rows, real_whole = keras_model.assign_rows, keras_model.assign_variable
    inside = []  # a whole assignment writes its (already tampered) rows through assign_rows

    def rows(target, first, block):
        real_rows(target, first, _flip_first_sign(block) if first == 0 and not inside
                  else block)

    def whole(v, value, name=""):
        inside.append(1)
        try:
            real_whole(v, _flip_first_sign(value), name)
        finally:
            inside.pop()

    monkeypatch.setattr(keras_model, "assign_rows", rows)
    monkeypatch.setattr(keras_model, "assign_variable", whole)
    spec, w, b = _files(tmp_path)
    model, report = transplant(_model(), load_spec(spec), progress=False)
    rows = {r["target"]: r for r in report.checksums}
    for key, var, want in (("fc/kernel", model.get_layer("fc").kernel, w.T),
                           ("fc/bias", model.get_layer("fc").bias, b)):
        row, held = rows[key], var.numpy()
        assert not same_bytes(held, np.ascontiguousarray(want))
        assert row["value_sha256"] == sha256_array(np.ascontiguousarray(want))
        assert row["assigned_matches"] is False
        assert row["assigned_sha256"] == sha256_array(held) != row["value_sha256"]


def test_same_bytes_is_bytewise():
    a = np.array([0.0, np.nan, 1.5, 2.0, -3.0], np.float32)
    assert same_bytes(a, a.copy())  # NaN with the same bits: equal
    neg = a.copy()
    neg[0] = -0.0
    assert not same_bytes(a, neg)  # equal as floats, not as bytes (nor as sha256)
    assert not same_bytes(a, a.astype(np.float64))
    assert not same_bytes(a, a.reshape(5, 1))
    big = np.arange(3 * plan.COMPARE_BLOCK + 5, dtype=np.int16)  # blocks and a tail
    other = big.copy()
    other[-1] += 1
    assert same_bytes(big, big.copy()) and not same_bytes(big, other)
    other = big.copy()
    other[2 * plan.COMPARE_BLOCK] += 1
    assert not same_bytes(big, other)
