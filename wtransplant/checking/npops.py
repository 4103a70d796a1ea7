"""NumPy implementations of the operations the reference forward pass needs.

Written from the frameworks' documented equations, in float64, channels-first (N, C,
spatial...) with PyTorch-style (O, I/groups, k...) weights. Nothing here shares code with
the layout conversions: a conversion mistake cannot hide in both places.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# --------------------------------------------------------------------------------------
# activations


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def gelu(x, approximate=False):
    if approximate:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * (np.exp(np.minimum(x, 0)) - 1))


def selu(x):
    return 1.0507009873554805 * elu(x, 1.6732632423543772)


ACTIVATIONS = {
    "linear": lambda x: x,
    None: lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "softmax": softmax,
    "gelu": gelu,
    "elu": elu,
    "selu": selu,
    "swish": lambda x: x * sigmoid(x),
    "silu": lambda x: x * sigmoid(x),
    "softplus": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "hard_sigmoid": lambda x: np.clip(x / 6 + 0.5, 0, 1),
    "exponential": np.exp,
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
}


def activation(name):
    if isinstance(name, dict):  # a serialised activation
        name = (name.get("config") or {}).get("name") or name.get("class_name")
    if isinstance(name, str):
        name = name.lower()
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r}")
    return ACTIVATIONS[name]


# --------------------------------------------------------------------------------------
# padding


def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow/Keras 'same': output ceil(size/s), extra padding at the end."""
    eff = (k - 1) * d + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


def pad_spatial(x, pads, value=0.0):
    """x: (N, C, *spatial); pads: [(before, after)] per spatial axis."""
    return np.pad(x, [(0, 0), (0, 0), *pads], constant_values=value)


# --------------------------------------------------------------------------------------
# convolution (cross-correlation, as every DL framework computes it)


def conv_windows(x, k, stride, dilation):
    """The views of x (N, C, *S) that a kernel of spatial size k meets: (N, C, *S', *K),
    stride over positions and dilation within windows (no copy)."""
    nd = x.ndim - 2
    eff = [(k[i] - 1) * dilation[i] + 1 for i in range(nd)]
    win = sliding_window_view(x, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride) + \
        tuple(slice(None, None, d) for d in dilation)
    return win[sl]


def conv(x, w, b=None, stride=(1,), dilation=(1,), groups: int = 1):
    """x (N, C, *S), w (O, C/groups, *K) -> (N, O, *S'). Padding is applied by the caller."""
    nd = x.ndim - 2
    stride = ntuple(stride, nd)
    dilation = ntuple(dilation, nd)
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    win = conv_windows(x, w.shape[2:], stride, dilation)
    outs = []
    sp, kk = "xyz"[:nd], "ijk"[:nd]  # spatial and kernel axes (channels: q, out: o)
    for g in range(groups):
        xg = win[:, g * cg:(g + 1) * cg]
        wg = w[g * og:(g + 1) * og]
        outs.append(np.einsum(f"nq{sp}{kk},oq{kk}->no{sp}", xg, wg, optimize=True))
    y = np.concatenate(outs, axis=1)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


def conv_transpose(x, w, b=None, stride=(1,), groups: int = 1):
    """x (N, I, *S), w (I, O/groups, *K) (PyTorch's layout) -> the full transposed
    convolution (N, O, (S-1)*s + K); cropping is the caller's."""
    nd = x.ndim - 2
    stride = ntuple(stride, nd)
    n, ci = x.shape[:2]
    k = w.shape[2:]
    og = w.shape[1]
    ig = ci // groups
    out_sp = [(x.shape[2 + i] - 1) * stride[i] + k[i] for i in range(nd)]
    y = np.zeros((n, og * groups, *out_sp))
    for g in range(groups):
        xg = x[:, g * ig:(g + 1) * ig]
        wg = w[g * ig:(g + 1) * ig]
        for kidx in np.ndindex(*k):
            contrib = np.einsum("ni...,io->no...", xg, wg[(slice(None), slice(None)) + kidx])
            sl = tuple(slice(kidx[i], kidx[i] + stride[i] * (x.shape[2 + i] - 1) + 1,
                             stride[i]) for i in range(nd))
            y[(slice(None), slice(g * og, (g + 1) * og)) + sl] += contrib
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


def pool(x, size, stride, mode: str, pads=None):
    """Max/average pooling over the spatial axes of (N, C, *S). Average pooling over padded
    windows averages only the real elements (Keras/TF 'same')."""
    nd = x.ndim - 2
    size = ntuple(size, nd)
    stride = ntuple(stride, nd)
    if pads and any(p != (0, 0) for p in pads):
        fill = -np.inf if mode == "max" else 0.0
        mask = pad_spatial(np.ones_like(x), pads, 0.0)
        x = pad_spatial(x, pads, fill)
    else:
        mask = None
    win = sliding_window_view(x, size, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
    win = win[sl]
    axes = tuple(range(-nd, 0))
    if mode == "max":
        return win.max(axis=axes)
    s = win.sum(axis=axes)
    if mask is None:
        return s / math.prod(size)
    mw = sliding_window_view(mask, size, axis=tuple(range(2, 2 + nd)))[sl]
    return s / mw.sum(axis=axes)


def torch_pool(x, size, stride, padding, mode: str, ceil_mode: bool = False,
               count_include_pad: bool = True):
    """PyTorch's MaxPoolNd/AvgPoolNd on (N, C, *S): explicit padding on both sides (max:
    padded positions never win), ceil_mode (the last window may reach past the input; it
    must start inside the input or its left padding) and PyTorch's average divisors."""
    from wtransplant.planning.torchgeom import avg_correction, extra_right

    nd = x.ndim - 2
    size, stride, padding = ntuple(size, nd), ntuple(stride, nd), ntuple(padding, nd)
    spatial = x.shape[2:]
    pads = [(p, p + extra_right(n, k, s, p, ceil_mode))
            for n, k, s, p in zip(spatial, size, stride, padding)]
    if mode == "max":
        return pool(x, size, stride, "max", pads)
    xp = pad_spatial(x, pads, 0.0)
    win = sliding_window_view(xp, size, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
    mean = win[sl].sum(axis=tuple(range(-nd, 0))) / math.prod(size)
    f = avg_correction(tuple(spatial), size, stride, padding, ceil_mode, count_include_pad)
    return mean * f


def ntuple(v, n):
    """A size for each of ``n`` axes: an int repeated, a list of ``n`` as is (another
    length: its first value repeated)."""
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v if len(v) == n else (v[0],) * n


# --------------------------------------------------------------------------------------
# normalisation


def batchnorm(x, gamma, beta, mean, var, eps, axis=1):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda a: a.reshape(shape)  # noqa: E731
    out = (x - r(mean)) / np.sqrt(r(var) + eps)
    if gamma is not None:
        out = out * r(gamma)
    if beta is not None:
        out = out + r(beta)
    return out


def layernorm(x, gamma, beta, eps, axes=(-1,)):
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    out = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        out = out * gamma
    if beta is not None:
        out = out + beta
    return out


# --------------------------------------------------------------------------------------
# recurrent cells: x (N, T, F) -> all states (N, T, H)


def run_rnn(step, x, h0, reverse=False):
    t_idx = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
    state = h0
    outs = []
    for t in t_idx:
        state = step(x[:, t], state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    if reverse:
        outs = outs[::-1]
    return np.stack(outs, axis=1)


def torch_gru_step(w_ih, w_hh, b_ih, b_hh):
    """PyTorch GRU: gates r, z, n; n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    def step(x, h):
        gi = x @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        ir, iz, inn = np.split(gi, 3, axis=1)
        hr, hz, hn = np.split(gh, 3, axis=1)
        r = sigmoid(ir + hr)
        z = sigmoid(iz + hz)
        n = np.tanh(inn + r * hn)
        return (1 - z) * n + z * h
    return step


def torch_lstm_step(w_ih, w_hh, b_ih, b_hh):
    """PyTorch LSTM: gates i, f, g, o."""
    def step(x, state):
        h, c = state
        g = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, gg, o = np.split(g, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        return (sigmoid(o) * np.tanh(c), c)
    return step


def torch_rnn_step(w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    act = np.tanh if nonlinearity == "tanh" else (lambda v: np.maximum(v, 0))

    def step(x, h):
        return act(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    return step


def keras_gru_step(kernel, rec, bias, reset_after, act, rec_act):
    """Keras GRU: gates z, r, h (kernel columns); reset_after=True keeps two biases."""
    if bias is None:
        bi = bh = 0.0
    elif reset_after:
        bi, bh = bias[0], bias[1]
    else:
        bi, bh = bias, 0.0

    def step(x, h):
        xi = x @ kernel + bi
        xz, xr, xh = np.split(xi, 3, axis=1)
        uz, ur, uh = np.split(rec, 3, axis=1)
        if reset_after:
            hh_all = h @ rec + bh
            hz, hr, hhh = np.split(hh_all, 3, axis=1)
            z = rec_act(xz + hz)
            r = rec_act(xr + hr)
            cand = act(xh + r * hhh)
        else:
            z = rec_act(xz + h @ uz)
            r = rec_act(xr + h @ ur)
            cand = act(xh + (r * h) @ uh)
        return z * h + (1 - z) * cand
    return step


def keras_lstm_step(kernel, rec, bias, act, rec_act):
    """Keras LSTM: gates i, f, c, o."""
    b = 0.0 if bias is None else bias

    def step(x, state):
        h, c = state
        g = x @ kernel + h @ rec + b
        i, f, cc, o = np.split(g, 4, axis=1)
        c = rec_act(f) * c + rec_act(i) * act(cc)
        return (rec_act(o) * act(c), c)
    return step


def keras_rnn_step(kernel, rec, bias, act):
    b = 0.0 if bias is None else bias

    def step(x, h):
        return act(x @ kernel + h @ rec + b)
    return step
