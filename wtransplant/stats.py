"""Per-tensor statistics computed block by block, so memory stays bounded on huge datasets.

Blocks follow the dataset's chunking along the first axis (whole chunks are read, never
partial ones twice) and hold at most ``block_bytes``; sums are accumulated in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import numpy as np

from .errors import InputError
from .h5io import OpenedSource, check_dataset_safe

BLOCK_BYTES = 32 << 20


@dataclass
class TensorStats:
    count: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    skipped: str | None = None

    def to_dict(self) -> dict:
        if self.skipped:
            return {"skipped": self.skipped}
        return {"count": self.count, "min": self.min, "max": self.max, "mean": self.mean,
                "std": self.std, "nan": self.nan, "inf": self.inf, "zeros": self.zeros}


def _blocks(ds: h5py.Dataset, block_bytes: int):
    shape = ds.shape
    if not shape:
        yield ()
        return
    row_bytes = max(1, math.prod(shape[1:]) * ds.dtype.itemsize)
    rows = max(1, block_bytes // row_bytes)
    if ds.chunks:
        c0 = ds.chunks[0]
        rows = max(c0, (rows // c0) * c0)
    if rows >= shape[0] or math.prod(shape[1:]) == 0:
        yield slice(None)
        return
    if row_bytes > block_bytes and len(shape) > 1:
        # one row is itself huge: walk the second axis too
        inner = max(1, block_bytes // max(1, math.prod(shape[2:]) * ds.dtype.itemsize))
        for i in range(shape[0]):
            for j in range(0, shape[1], inner):
                yield (i, slice(j, j + inner))
        return
    for start in range(0, shape[0], rows):
        yield slice(start, start + rows)


def tensor_stats(src: OpenedSource, path: str, *, block_bytes: int = BLOCK_BYTES
                 ) -> TensorStats:
    ds = src.h5[path]
    try:
        check_dataset_safe(ds, src)
    except InputError as e:
        return TensorStats(skipped=str(e).split(": ", 1)[-1])
    if ds.dtype.kind not in "fiub":
        return TensorStats(skipped=f"not numeric ({ds.dtype})")
    st = TensorStats()
    total = 0.0
    total_sq = 0.0
    lo, hi = math.inf, -math.inf
    finite_n = 0
    for sel in _blocks(ds, block_bytes):
        try:
            block = np.asarray(ds[sel])
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
            return TensorStats(skipped=f"unreadable data: {str(e).split('(')[0].strip()}")
        if block.dtype.kind == "b":
            block = block.astype(np.uint8)
        st.count += block.size
        if block.size == 0:
            continue
        if block.dtype.kind == "f":
            nan = np.isnan(block)
            inf = np.isinf(block)
            st.nan += int(nan.sum())
            st.inf += int(inf.sum())
            finite = block[~(nan | inf)] if st.nan or st.inf else block
        else:
            finite = block
        if finite.size == 0:
            continue
        f64 = finite.astype(np.float64, copy=False)
        finite_n += f64.size
        total += float(f64.sum())
        total_sq += float(np.square(f64).sum())
        lo = min(lo, float(f64.min()))
        hi = max(hi, float(f64.max()))
        st.zeros += int(f64.size - np.count_nonzero(f64))
    if finite_n:
        st.min, st.max = lo, hi
        st.mean = total / finite_n
        st.std = math.sqrt(max(0.0, total_sq / finite_n - st.mean * st.mean))
    return st
