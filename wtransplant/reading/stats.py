"""Per-tensor statistics computed block by block, so memory stays bounded on huge datasets.

Blocks follow the dataset's chunking along the first axis (whole chunks are read, never
partial ones twice) and hold at most ``block_bytes``; sums are accumulated in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from wtransplant._lazy import lazy
from wtransplant.errors import InputError
from wtransplant.reading.h5io import OpenedSource, check_dataset_safe

h5py = lazy("h5py")
np = lazy("numpy")

BLOCK_BYTES = 32 << 20
#: a stored (allocated) chunk that passes through a filter is decompressed whole by the
#: HDF5 library, however little of it is read: larger ones are not read for statistics
MAX_FILTERED_CHUNK_BYTES = 256 << 20


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
    chunks = getattr(ds, "chunks", None)
    if chunks and math.prod(chunks) * ds.dtype.itemsize <= block_bytes:
        c0 = chunks[0]  # whole chunks per block, when a chunk fits in a block
        rows = max(c0, (rows // c0) * c0)
    if math.prod(shape[1:]) == 0 or (rows >= shape[0] and row_bytes * shape[0] <= block_bytes):
        yield slice(None)
        return
    rows = min(rows, shape[0])
    if row_bytes > block_bytes and len(shape) > 1:
        # one row is itself huge: walk the second axis too
        inner = max(1, block_bytes // max(1, math.prod(shape[2:]) * ds.dtype.itemsize))
        for i in range(shape[0]):
            for j in range(0, shape[1], inner):
                yield (i, slice(j, j + inner))
        return
    for start in range(0, shape[0], rows):
        yield slice(start, start + rows)


def _big_filtered_chunk(ds: h5py.Dataset) -> str | None:
    if not ds.chunks:
        return None
    nbytes = math.prod(ds.chunks) * ds.dtype.itemsize
    if nbytes <= MAX_FILTERED_CHUNK_BYTES:
        return None
    try:
        filtered = ds.id.get_create_plist().get_nfilters() > 0
        stored = ds.id.get_storage_size() > 0
    except Exception:  # noqa: BLE001 - unknown: be careful
        filtered = stored = True
    if filtered and stored:
        return (f"one compressed chunk of {nbytes} bytes would be decompressed whole "
                f"(more than {MAX_FILTERED_CHUNK_BYTES >> 20} MiB)")
    return None


def _fill_only(ds: h5py.Dataset) -> TensorStats | None:
    """Statistics of a dataset with no stored data (every element is the fill value),
    without reading it: a 2 KB file may declare gigabytes of fill."""
    try:
        if ds.id.get_storage_size() != 0 or ds.size == 0:
            return None
        fill = np.asarray(ds.fillvalue, dtype=ds.dtype)
    except Exception:  # noqa: BLE001 - fall back to reading
        return None
    v = float(fill.astype(np.float64)) if fill.dtype.kind != "b" else float(bool(fill))
    st = TensorStats(count=int(ds.size))
    if math.isnan(v):
        st.nan = st.count
    elif math.isinf(v):
        st.inf = st.count
    else:
        st.min = st.max = st.mean = v
        st.std = 0.0
        st.zeros = st.count if v == 0 else 0
    return st


def tensor_stats(src: OpenedSource, path: str, *, block_bytes: int = BLOCK_BYTES
                 ) -> TensorStats:
    try:
        ds = src.h5[path]
        check_dataset_safe(ds, src)
        kind = ds.dtype.kind
    except InputError as e:
        return TensorStats(skipped=str(e).split(": ", 1)[-1])
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
        return TensorStats(skipped=f"cannot open: {str(e).split('(')[0].strip()}")
    if kind not in "fiub" or ds.shape is None:
        return TensorStats(skipped=f"not numeric ({ds.dtype})" if ds.shape is not None
                           else "no dataspace (empty)")
    big = _big_filtered_chunk(ds)
    if big:
        return TensorStats(skipped=big)
    unwritten = _fill_only(ds)
    if unwritten is not None:
        return unwritten
    return array_stats(ds, block_bytes=block_bytes)


def array_stats(ds, *, block_bytes: int = BLOCK_BYTES) -> TensorStats:
    """Statistics of an array-like (an h5py dataset, a read-only memory map, an array)
    read block by block along its first axis."""
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
