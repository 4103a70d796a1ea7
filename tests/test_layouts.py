"""Layout recipes as data (no Keras needed): each rule checked numerically."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wtransplant.errors import MappingError
from wtransplant.planning.layouts import TargetLayer, TargetVar
from wtransplant.planning.layouts.ops import (
    Reshape,
    ReverseAxes,
    Transpose,
    apply,
    fuse,
    run_shapes,
)
from wtransplant.planning.plan import build_recipe
from wtransplant.reading.formats import SourceTensor

rng = np.random.default_rng(0)


def _dense(n_in, n_out, flatten_from=None):
    k = TargetVar("fc/kernel", "fc", "kernel", (n_in, n_out))
    b = TargetVar("fc/bias", "fc", "bias", (n_out,))
    return TargetLayer("fc", "Dense", {}, [k, b], flatten_from=flatten_from), k, b


def _src(name, stored, column_major=False):
    shape = tuple(reversed(stored)) if column_major else tuple(stored)
    return SourceTensor(name, "/" + name, shape, tuple(stored), "float64",
                        column_major=column_major)


def test_matlab_flatten_is_column_major():
    """MATLAB flattens an H x W x C map column-major (h fastest); Keras flattens H,W,C
    row-major (c fastest). The recipe must reorder the kernel rows accordingly."""
    h, w, c, n_out = 3, 4, 5, 6
    a = rng.standard_normal((h, w, c))
    w_matlab = rng.standard_normal((n_out, h * w * c))  # MATLAB's own view: out-by-in
    y_matlab = w_matlab @ a.flatten(order="F")  # what MATLAB computes
    lay, kvar, _ = _dense(h * w * c, n_out, flatten_from=(h, w, c))
    stored = np.ascontiguousarray(w_matlab.T)  # column-major on disk: h5py sees the transpose
    src = _src("W", stored.shape, column_major=True)
    ops = build_recipe(kvar, lay, [src], "matlab", None)
    kernel = apply(ops, [stored])
    np.testing.assert_allclose(a.reshape(-1) @ kernel, y_matlab, rtol=1e-12)


def test_torch_flatten_is_chw():
    c, h, w, n_out = 5, 3, 4, 6
    a_chw = rng.standard_normal((c, h, w))
    weight = rng.standard_normal((n_out, c * h * w))
    y_torch = weight @ a_chw.reshape(-1)
    lay, kvar, _ = _dense(c * h * w, n_out, flatten_from=(h, w, c))
    kernel = apply(build_recipe(kvar, lay, [_src("w", weight.shape)], "torch", None), [weight])
    a_hwc = np.moveaxis(a_chw, 0, -1)
    np.testing.assert_allclose(a_hwc.reshape(-1) @ kernel, y_torch, rtol=1e-12)


def test_plain_orientation_by_shape_and_square_refused():
    lay, kvar, bvar = _dense(6, 12)
    w = rng.standard_normal((12, 6))  # out-by-in
    k = apply(build_recipe(kvar, lay, [_src("W", w.shape)], "plain", None), [w])
    np.testing.assert_array_equal(k, w.T)
    b = rng.standard_normal((12, 1))
    np.testing.assert_array_equal(
        apply(build_recipe(bvar, lay, [_src("b", b.shape)], "plain", None), [b]), b[:, 0])
    lay, kvar, _ = _dense(6, 6)
    with pytest.raises(MappingError, match="square"):
        build_recipe(kvar, lay, [_src("W", (6, 6))], "plain", None)


def test_torch_gru_gates_and_biases():
    hdim, n_in = 4, 3
    w_ih = rng.standard_normal((3 * hdim, n_in))
    r, z, n = np.split(w_ih, 3)
    k = TargetVar("g/kernel", "g", "kernel", (n_in, 3 * hdim))
    bias = TargetVar("g/bias", "g", "bias", (2, 3 * hdim))
    lay = TargetLayer("g", "GRU", {"reset_after": True}, [k, bias])
    got = apply(build_recipe(k, lay, [_src("w_ih", w_ih.shape)], "torch", None), [w_ih])
    np.testing.assert_array_equal(got, np.concatenate([z, r, n]).T)  # Keras z, r, h
    b_ih, b_hh = rng.standard_normal(3 * hdim), rng.standard_normal(3 * hdim)
    got = apply(build_recipe(bias, lay, [_src("b_ih", (12,)), _src("b_hh", (12,))], "torch",
                             None), [b_ih, b_hh])
    sw = lambda v: np.concatenate([v[4:8], v[:4], v[8:]])  # noqa: E731
    np.testing.assert_array_equal(got, np.stack([sw(b_ih), sw(b_hh)]))


def test_torch_depthwise_multiplier_order():
    c, m, kh, kw = 3, 2, 3, 3
    w = rng.standard_normal((c * m, 1, kh, kw))
    var = TargetVar("d/kernel", "d", "kernel", (kh, kw, c, m))
    lay = TargetLayer("d", "DepthwiseConv2D", {}, [var])
    got = apply(build_recipe(var, lay, [_src("w", w.shape)], "torch", None), [w])
    for ci, mi in itertools.product(range(c), range(m)):  # output channel ci*m + mi
        np.testing.assert_array_equal(got[:, :, ci, mi], w[ci * m + mi, 0])


@pytest.mark.parametrize("seed", range(5))
def test_fused_transposes_equal_the_ops_one_by_one(seed):
    r = np.random.default_rng(seed)
    a = r.standard_normal((2, 3, 4, 5))
    perms = [tuple(r.permutation(4)) for _ in range(3)]
    ops = [ReverseAxes(), Transpose(perms[0]), Transpose(perms[1]), ReverseAxes(),
           Transpose(perms[2])]
    want = a
    for op in ops:
        want = op.apply([want])[0]
    np.testing.assert_array_equal(apply(ops, [a]), want)
    assert len(fuse(ops)) == 1
    assert run_shapes(ops, [a.shape]) == [want.shape]


def test_reshape_with_minus_one_and_errors():
    assert run_shapes([Reshape((-1,))], [(3, 4)]) == [(12,)]
    with pytest.raises(ValueError):
        run_shapes([Reshape((5, -1))], [(3, 4)])
