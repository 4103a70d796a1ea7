"""``.safetensors`` (Hugging Face, timm, ``safetensors.torch.save_file``) as a
:class:`~wtransplant.reading.sources.base.Source`.

The format: 8 bytes little-endian header length N, N bytes of JSON (UTF-8) mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the first byte after the header), plus an optional ``__metadata__`` object of strings;
then the data. The header is parsed and checked here by hand, against the file, before
anything is allocated or mapped:

* N at most :data:`MAX_HEADER_BYTES` and within the file; the JSON strict UTF-8, an
  object, no name twice, no empty name;
* every dtype known, every shape a list of non-negative integers, every range inside the
  data and exactly ``prod(shape) * itemsize`` bytes long, no two ranges overlapping.

Values are read through a read-only memory map of just that tensor's bytes, then copied
(a file changed after it was opened never faults the reader). BF16 tensors are read as
float32 (exact); float8 tensors are listed but not read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from wtransplant._lazy import lazy
from wtransplant.errors import InputError, UnsafeInputError
from wtransplant.reading.h5io import READ_BLOCK_BYTES, fmt_bytes
from wtransplant.reading.sources.base import (
    MAX_TENSOR_BYTES,
    Source,
    SourceInfo,
    check_limit,
    flat_tree,
    tensor_node,
)
from wtransplant.reading.tree import FileTree

np = lazy("numpy")

#: a header longer than this is refused (real ones are a few hundred KiB at most)
MAX_HEADER_BYTES = 100 << 20
#: dimensions of one tensor
MAX_NDIM = 64

#: safetensors dtype -> (numpy dtype of the stored bytes, name shown, kind)
DTYPES = {
    "F64": ("<f8", "float64", "float"),
    "F32": ("<f4", "float32", "float"),
    "F16": ("<f2", "float16", "float"),
    "BF16": ("<u2", "bfloat16", "float"),
    "I64": ("<i8", "int64", "int"),
    "I32": ("<i4", "int32", "int"),
    "I16": ("<i2", "int16", "int"),
    "I8": ("i1", "int8", "int"),
    "U64": ("<u8", "uint64", "uint"),
    "U32": ("<u4", "uint32", "uint"),
    "U16": ("<u2", "uint16", "uint"),
    "U8": ("u1", "uint8", "uint"),
    "BOOL": ("?", "bool", "bool"),
    "C64": ("<c8", "complex64", "complex"),
    # no NumPy dtype: listed, never read
    "F8_E4M3": ("u1", "float8_e4m3", "other"),
    "F8_E5M2": ("u1", "float8_e5m2", "other"),
    "F8_E8M0": ("u1", "float8_e8m0", "other"),
}

#: __metadata__['format'] -> the program that wrote it
FRAMEWORKS = {"pt": "PyTorch", "tf": "TensorFlow", "flax": "Flax", "np": "NumPy",
              "mlx": "MLX", "paddle": "PaddlePaddle"}


class _Entry:
    __slots__ = ("name", "code", "shape", "begin", "end")

    def __init__(self, name, code, shape, begin, end):
        self.name, self.code, self.shape, self.begin, self.end = name, code, shape, begin, end


class SafetensorsSource(Source):
    container = "safetensors"

    def __init__(self, path: Path, size: int, header_len: int, entries: dict,
                 metadata: dict):
        self.path = path
        self.display = str(path)
        self.file_size = size
        self.header_len = header_len
        self.data_start = 8 + header_len
        self.entries = entries  # name -> _Entry, in header order
        self.metadata = metadata

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if len(head) < 10:
            return False
        n = int.from_bytes(head[:8], "little")
        return n >= 2 and head[8:9] == b"{"

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> SafetensorsSource:
        display = str(path)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                raise InputError("safetensors file shorter than its 8-byte header length",
                                 path=display)
            n = int.from_bytes(fh.read(8), "little")
            if n > MAX_HEADER_BYTES:
                raise UnsafeInputError(
                    f"safetensors header length {n} bytes ({fmt_bytes(n)}) is over the "
                    f"{fmt_bytes(MAX_HEADER_BYTES)} limit; refused before reading it",
                    path=display)
            if 8 + n > size:
                raise UnsafeInputError(
                    f"safetensors header length {n} bytes runs past the end of the file "
                    f"({size} bytes); refused before reading it", path=display)
            raw = fh.read(n)
        header = _parse_header(raw, display)
        metadata = _metadata(header.pop("__metadata__", None), display)
        entries = _entries(header, size - 8 - n, display)
        return cls(path, size, n, entries, metadata)

    # -- describing
    def _walk(self) -> FileTree:
        nodes = []
        for e in self.entries.values():
            _, shown, kind = DTYPES[e.code]
            nodes.append(tensor_node(e.name, e.shape, shown, kind, e.end - e.begin))
        return flat_tree(self.path, self.display, self.file_size, nodes, self.metadata)

    def info(self) -> SourceInfo:
        fw = FRAMEWORKS.get(self.metadata.get("format", ""))
        writer = "safetensors" + (f" ({fw}: __metadata__ format "
                                  f"{self.metadata['format']!r})" if fw else "")
        ev = [f"safetensors header ({self.header_len} bytes of JSON after the 8-byte "
              f"length): {len(self.entries)} tensors, every data range checked against the "
              f"file"]
        if self.metadata:
            shown = ", ".join(f"{k}={v!r}" for k, v in list(self.metadata.items())[:4])
            ev.append(f"__metadata__: {shown}")
        return SourceInfo("safetensors", writer, ev, dict(self.metadata))

    # -- reading
    def _entry(self, path: str) -> _Entry:
        e = self.entries.get(path[1:] if path.startswith("/") else path)
        if e is None:
            raise InputError(f"no tensor {path.lstrip('/')!r} in the file", path=self.display)
        return e

    def _map(self, e: _Entry):
        """A read-only memory map of one tensor's bytes, as stored."""
        np_dtype, _, kind = DTYPES[e.code]
        if kind == "other":
            raise InputError(f"{e.name}: dtype {e.code} has no NumPy equivalent; not read",
                             path=self.display)
        try:
            if os.path.getsize(self.path) != self.file_size:
                raise InputError("the file changed size since it was opened",
                                 path=self.display)
            if e.end == e.begin:
                return np.zeros(e.shape, np.dtype(np_dtype))
            dt = np.dtype(np_dtype)
            m = np.memmap(self.path, dtype=dt, mode="r", offset=self.data_start + e.begin,
                          shape=((e.end - e.begin) // dt.itemsize,))
            return m.reshape(e.shape)  # memmap makes shape () into (1,)
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read tensor {e.name}: {err}", path=self.display) from None

    def view(self, path: str) -> np.ndarray:
        e = self._entry(path)
        m = self._map(e)
        return _bf16(m) if e.code == "BF16" else m

    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        e = self._entry(path)
        out_bytes = (e.end - e.begin) * (2 if e.code == "BF16" else 1)
        check_limit(out_bytes, e.shape, e.name, self.display, limit)
        m = self._map(e)
        if e.code == "BF16":
            return _bf16(m)
        out = np.empty(e.shape, m.dtype.newbyteorder("="))
        out[...] = m
        del m
        return out

    def read_as(self, path: str, dtype, *, hasher=None) -> np.ndarray:
        """Cast block by block out of the memory map: a float64 tensor for a float32
        variable is never held whole as float64."""
        e = self._entry(path)
        if e.code == "BF16":
            return super().read_as(path, dtype, hasher=hasher)
        dtype = np.dtype(dtype)
        check_limit(max(e.end - e.begin, int(np.prod(e.shape)) * dtype.itemsize), e.shape,
                    e.name, self.display, MAX_TENSOR_BYTES)
        m = self._map(e)
        out = np.empty(e.shape, dtype)
        src, dst = m.reshape(-1), out.reshape(-1)
        step = max(1, READ_BLOCK_BYTES // max(1, m.dtype.itemsize))
        for i in range(0, src.size, step):
            block = np.asarray(src[i:i + step], dtype=m.dtype.newbyteorder("="))
            if hasher is not None:
                hasher.update(memoryview(block).cast("B"))
            dst[i:i + step] = block
        del m
        return out

    def stored_type(self, path: str) -> tuple:
        e = self.entries.get(path.lstrip("/"))
        if e is None or DTYPES[e.code][2] == "other":
            return None, None
        dt = np.dtype(np.float32) if e.code == "BF16" else np.dtype(DTYPES[e.code][0])
        return dt.newbyteorder("="), tuple(e.shape)


def _bf16(m) -> np.ndarray:
    """bfloat16 bits -> float32 (exact: bfloat16 is float32's upper half)."""
    return (np.asarray(m, dtype="<u2").astype(np.uint32) << 16).view(np.float32)


def _parse_header(raw: bytes, display: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"safetensors header is not UTF-8 (byte {e.start})",
                         path=display) from None

    def pairs(items):
        d = {}
        for k, v in items:
            if k in d:
                raise InputError(f"safetensors header names {k!r} twice; refused",
                                 path=display)
            d[k] = v
        return d

    try:
        header = json.loads(text, object_pairs_hook=pairs)
    except RecursionError:
        raise InputError("safetensors header nested too deeply; refused",
                         path=display) from None
    except ValueError as e:
        raise InputError(f"safetensors header is not valid JSON: {e}", path=display) from None
    if not isinstance(header, dict):
        raise InputError(f"safetensors header is JSON but not an object "
                         f"({type(header).__name__})", path=display)
    return header


def _metadata(meta, display: str) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise InputError("safetensors __metadata__ must map names to strings", path=display)
    return meta


def _entries(header: dict, data_len: int, display: str) -> dict:
    out = {}
    for name, d in header.items():
        if not name:
            raise InputError("safetensors header has a tensor with an empty name",
                             path=display)
        if not isinstance(d, dict):
            raise InputError(f"tensor {name!r}: header entry is not an object", path=display)
        code = d.get("dtype")
        if code not in DTYPES:
            raise InputError(f"tensor {name!r}: unknown dtype {code!r}", path=display)
        shape = d.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(
                type(s) is int and s >= 0 for s in shape):
            raise InputError(f"tensor {name!r}: shape {shape!r} is not a list of "
                             f"non-negative integers", path=display)
        offs = d.get("data_offsets")
        if not isinstance(offs, list) or len(offs) != 2 or not all(
                type(o) is int for o in offs) or not 0 <= offs[0] <= offs[1]:
            raise InputError(f"tensor {name!r}: data_offsets {offs!r} is not [begin, end] "
                             f"with 0 <= begin <= end", path=display)
        begin, end = offs
        itemsize = np.dtype(DTYPES[code][0]).itemsize
        n = 1
        for s in shape:
            n *= s  # Python ints: a 100 GB declaration cannot overflow
        need = n * itemsize
        if end > data_len:
            raise UnsafeInputError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] reach past the end of the "
                f"file ({data_len} bytes of data); refused before allocating", path=display)
        if end - begin != need:
            raise UnsafeInputError(
                f"tensor {name!r}: shape {tuple(shape)} {code} needs {need} bytes "
                f"({fmt_bytes(need)}) but data_offsets [{begin}, {end}] hold {end - begin}; "
                f"refused before allocating", path=display)
        out[name] = _Entry(name, code, tuple(shape), begin, end)
    ranges = sorted((e.begin, e.end, e.name) for e in out.values() if e.end > e.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(ranges, ranges[1:]):
        if b1 < e0:
            raise UnsafeInputError(
                f"tensors {n0!r} [{b0}, {e0}] and {n1!r} [{b1}, {e1}] overlap in the file; "
                f"refused", path=display)
    return out


__all__ = ["SafetensorsSource", "MAX_HEADER_BYTES", "DTYPES"]
