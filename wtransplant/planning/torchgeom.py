"""PyTorch's pooling geometry (explicit padding, ``ceil_mode``, average divisors), as plain
Python/NumPy (layer 1): shared by the Keras layers that reproduce it and by the NumPy
reference, and pinned by tests against outputs written by PyTorch itself.
"""

from __future__ import annotations

import numpy as np

#: bound on the positions of an average-pooling divisor map (an untrusted spec's sizes)
MAX_CORRECTION = 1 << 24


def pool_out(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """PyTorch's output length: floor/ceil((n + 2p - k) / s) + 1, and in ceil mode minus
    one if the last window would start in the right padding."""
    span = n + 2 * p - k
    if span < 0:
        raise ValueError(f"pool window {k} is larger than the padded input {n + 2 * p}")
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def extra_right(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Padding beyond ``p`` on the right that the last (ceil-mode) window reaches."""
    out = pool_out(n, k, s, p, ceil_mode)
    return max(0, (out - 1) * s + k - (n + 2 * p))


def avg_divisors(n: int, k: int, s: int, p: int, ceil_mode: bool,
                 count_include_pad: bool) -> np.ndarray:
    """Per output position along one axis: how many positions PyTorch divides by."""
    out = pool_out(n, k, s, p, ceil_mode)
    d = np.empty(out, dtype=np.float64)
    for o in range(out):
        start = o * s - p
        end = min(start + k, n + p)
        if count_include_pad:
            d[o] = end - start
        else:
            d[o] = min(end, n) - max(start, 0)
    return d


def avg_correction(spatial: tuple, k: tuple, s: tuple, p: tuple, ceil_mode: bool,
                   count_include_pad: bool) -> np.ndarray:
    """Factor turning a mean over full k-windows (of a zero-padded input) into PyTorch's
    average: prod(k) / divisor, shape (*out_spatial,)."""
    outs = [pool_out(n, k[i], s[i], p[i], ceil_mode) for i, n in enumerate(spatial)]
    if int(np.prod(outs, dtype=np.float64)) > MAX_CORRECTION:
        raise ValueError(f"average pooling output {outs} is too large for PyTorch-style "
                         f"divisors (at most {MAX_CORRECTION} positions)")
    out = np.ones((), dtype=np.float64)
    for i, n in enumerate(spatial):
        d = avg_divisors(n, k[i], s[i], p[i], ceil_mode, count_include_pad)
        out = np.multiply.outer(out, k[i] / d)
    return out


def ints(v, nd: int, what: str) -> tuple:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v,) * nd
    if isinstance(v, list | tuple) and len(v) == nd and all(
            isinstance(x, int) and not isinstance(x, bool) for x in v):
        return tuple(v)
    raise ValueError(f"{what}: expected an integer or {nd} integers, got {v!r}")
