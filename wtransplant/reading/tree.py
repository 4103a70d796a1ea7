"""One object describing an HDF5 file's structure: groups, datasets, links, attributes.

Plain data, importing neither h5py nor NumPy. :func:`walk` builds a tree from an open file
through h5py (:mod:`.walk_h5py`); :mod:`.h5lean` builds the same tree without h5py for
``inspect``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wtransplant.reading.h5io import OpenedSource

#: Arrays in attributes up to this many elements are shown in full; strings in attributes
#: are kept whole in the tree (views shorten them).
MAX_ATTR_ELEMENTS = 32
#: Scalar string datasets up to this many bytes are read during the walk: they are labels
#: (Octave's per-variable 'type'), never tensors.
SMALL_STRING = 256

NUMERIC_KINDS = ("float", "int", "uint", "bool")

#: HDF5's filter codes (H5Z_FILTER_*, and registered plugins) as the tree names them
FILTER_NAMES = {1: "gzip", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit",
                6: "scaleoffset", 32001: "blosc", 32004: "lz4", 32008: "bitshuffle",
                32015: "zstd", 307: "bzip2", 32000: "lzf"}
#: HDF5's dataset layouts (H5D_COMPACT...)
LAYOUT_NAMES = {0: "compact", 1: "contiguous", 2: "chunked", 3: "virtual"}


@dataclass(slots=True)
class DatasetNode:
    path: str
    shape: tuple
    dtype: str
    kind: str  # float int uint bool complex string reference compound enum other
    layout: str = "contiguous"  # contiguous chunked compact virtual external
    chunks: tuple | None = None
    filters: list = field(default_factory=list)
    nbytes: int = 0  # declared: prod(shape) * itemsize
    storage: int = 0  # bytes stored in the file
    attrs: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)  # files a virtual/external dataset reads
    alias_of: str | None = None  # a second hard link to a dataset seen under another name
    value: str | None = None  # scalar strings of a few bytes (Octave's 'type') are read

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC_KINDS

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def to_dict(self) -> dict:
        d = {
            "path": self.path,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "layout": self.layout,
            "chunks": list(self.chunks) if self.chunks else None,
            "filters": list(self.filters),
            "nbytes": self.nbytes,
            "storage": self.storage,
        }
        if self.attrs:
            d["attrs"] = self.attrs
        if self.sources:
            d["sources"] = list(self.sources)
        if self.alias_of:
            d["alias_of"] = self.alias_of
        if self.value is not None:
            d["value"] = self.value
        return d


@dataclass(slots=True)
class GroupNode:
    path: str
    attrs: dict = field(default_factory=dict)
    children: list = field(default_factory=list)  # child names in file order
    alias_of: str | None = None

    def to_dict(self) -> dict:
        d = {"path": self.path, "children": len(self.children)}
        if self.attrs:
            d["attrs"] = self.attrs
        if self.alias_of:
            d["alias_of"] = self.alias_of
        return d


@dataclass(slots=True)
class LinkNode:
    path: str
    kind: str  # soft | external
    target: str
    target_file: str | None = None
    resolves_to: str | None = None  # soft links: 'dataset', 'group' or None if dangling

    def to_dict(self) -> dict:
        d = {"path": self.path, "kind": self.kind, "target": self.target}
        if self.target_file is not None:
            d["target_file"] = self.target_file
        if self.kind == "soft":
            d["resolves_to"] = self.resolves_to
        return d


@dataclass
class FileTree:
    """The structure of one file. Plain data: safe to keep after the file is closed."""

    path: str
    display: str
    file_size: int
    groups: dict[str, GroupNode]
    datasets: dict[str, DatasetNode]
    links: dict[str, LinkNode]
    userblock: bytes = b""
    archive: Any = None  # h5io.ArchiveInfo for .keras archives
    comment: str | None = None  # the root group's HDF5 comment (Octave writes one)

    @property
    def root_attrs(self) -> dict:
        return self.groups["/"].attrs

    @property
    def userblock_text(self) -> str:
        return self.userblock.split(b"\x00")[0].decode("latin-1", "replace").strip()

    def numeric_datasets(self) -> list[DatasetNode]:
        return [d for d in self.datasets.values() if d.numeric and d.alias_of is None]

    def children(self, path: str) -> list[str]:
        g = self.groups.get(path)
        if g is None:
            return []
        base = "" if path == "/" else path
        return [f"{base}/{c}" for c in g.children]

    def node(self, path: str):
        return self.groups.get(path) or self.datasets.get(path) or self.links.get(path)

    def to_dict(self) -> dict:
        return {
            "groups": [g.to_dict() for g in self.groups.values()],
            "datasets": [d.to_dict() for d in self.datasets.values()],
            "links": [ln.to_dict() for ln in self.links.values()],
        }


# --------------------------------------------------------------------------------------
# dtype description without the slow TypeID -> numpy conversion for the common cases

_INT_NAMES = {1: "8", 2: "16", 4: "32", 8: "64"}


@functools.lru_cache(maxsize=64)
def numeric_name(is_float: bool, size: int, big_endian: bool, signed: bool
                 ) -> tuple[str, str]:
    """(dtype string, kind) of an HDF5 float or integer type."""
    if is_float:
        name, kind = {2: "float16", 4: "float32", 8: "float64"}.get(size, f"float{size * 8}"), \
            "float"
    else:
        kind = "int" if signed else "uint"
        name = kind + _INT_NAMES.get(size, str(size * 8))
    return (">" + name if big_endian else name), kind


# --------------------------------------------------------------------------------------
# attribute values as h5py hands them over, for the walks without h5py (h5parse, h5lean)

def fixed_string(raw: bytes, pad: int, decode: str = "replace") -> str:
    """A fixed-length string as h5py hands it over (NumPy 'S': trailing NULs dropped;
    HDF5 ends a null-terminated string, ``pad`` 0, at its first NUL), decoded."""
    if pad == 0:
        raw = raw.split(b"\x00", 1)[0]
    return raw.rstrip(b"\x00").decode("utf-8", decode)


_NP_NAMES = {"f": "float", "i": "int", "u": "uint"}


def numpy_dtype_name(kind: str, size: int, big_endian: bool) -> str:
    """``str(numpy.dtype)`` of a stored float/int (``kind`` f, i or u) as h5py maps it."""
    if big_endian and size > 1:
        return f">{kind}{size}"
    return f"{_NP_NAMES[kind]}{size * 8}"


def min_max(values: list) -> tuple:
    """numpy's min and max: NaN if any value is NaN."""
    if any(v != v for v in values):
        nan = float("nan")
        return nan, nan
    return min(values), max(values)


def nest_list(values: list, shape: tuple):
    """``ndarray.tolist()`` of a flat C-order list."""
    if len(shape) == 1:
        return list(values)
    step = len(values) // shape[0] if shape[0] else 0
    if step == 0:
        return [nest_list([], shape[1:]) for _ in range(shape[0])]
    return [nest_list(values[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cycle collector while a walk builds tens of thousands of small,
    acyclic node objects: otherwise it runs every few hundred allocations and scans them
    all again, a fifth of the walk's time on large files. Nothing is leaked: reference
    counting still frees everything, and collection resumes afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def walk(src: OpenedSource) -> FileTree:
    """Walk every link of an open HDF5 file once, through h5py (metadata only; no dataset
    value is read). A file whose metadata is damaged is an InputError naming the object
    being read."""
    from wtransplant.reading.walk_h5py import walk as walk_h5py

    return walk_h5py(src)
