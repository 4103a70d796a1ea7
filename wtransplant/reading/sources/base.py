"""The :class:`Source` interface: one implementation per container, picked by its bytes.

A *source* is a file that holds named tensors: HDF5 (Keras 2/3 weights, MATLAB v7.3,
GNU Octave, h5py dumps), the weights inside a Keras 3 ``.keras`` archive, ``.safetensors``,
NumPy ``.npz``/``.npy`` (and, from other modules, ONNX initializers). Each implementation

* is chosen by :func:`open_source` from the file's first bytes (``sniff``), never by its
  suffix alone, in the order of :data:`REGISTRY`;
* describes the file as a :class:`~wtransplant.reading.tree.FileTree` (``tree()``): the
  structure the format readers, hints and planner already consume. Containers without
  groups give a flat tree whose datasets are ``'/' + tensor name``;
* lists its tensors (``tensors()``: path, shape and dtype as the file stores them);
* reads one tensor (``read``/``read_as``), bounded before anything is allocated and
  without executing anything the file holds;
* says what it knows about its writer (``info()``: a format name when the container
  decides it, the writing program, evidence lines, attributes).

Every error is an :class:`~wtransplant.errors.InputError` (exit 2) of one line naming the
file and the tensor. Only numpy, h5py and the standard library are imported: no Keras.

Adding a container: a module in this package with a :class:`Source` subclass, and one line
in :data:`REGISTRY` (before ``hdf5``, which is the fallback and says why a file is not one
it knows).
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from wtransplant._lazy import lazy
from wtransplant.errors import InputError
from wtransplant.reading.h5io import MAX_TENSOR_BYTES, check_readable_file, fmt_bytes, read_head
from wtransplant.reading.tree import NUMERIC_KINDS, DatasetNode, FileTree, GroupNode

np = lazy("numpy")

#: bytes of the file's head given to each implementation's ``sniff``
SNIFF_BYTES = 1024


@dataclass
class SourceInfo:
    """What the container itself says about its writer (before the format readers look at
    the tensor names)."""

    #: a format name (see ``formats.FORMATS``) when the container decides it
    #: (``safetensors``, ``npz``, ``npy``, ``onnx``); None: decided from the tree (HDF5)
    format: str | None = None
    #: the writing program, as far as the file says (``safetensors (format: pt)``)
    writer: str | None = None
    #: one line each: why this container, what its header says
    evidence: list[str] = field(default_factory=list)
    #: the container's own metadata (safetensors ``__metadata__``, ONNX producer...)
    attributes: dict = field(default_factory=dict)
    #: a :class:`~wtransplant.reading.formats.FormatReader` that names and groups this
    #: container's tensors itself (ONNX: the writer's view of generated names); None: the
    #: readers detect it from the tree
    reader: object | None = None


class Source:
    """One open, read-only source file. Use it in a ``with`` block (or call ``close``)."""

    #: short container name: hdf5, keras-archive, safetensors, npz, npy, onnx
    container: ClassVar[str] = ""

    path: Path
    display: str
    file_size: int
    follow_links: bool = False

    # -- choosing and opening
    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        """Is this file (its first :data:`SNIFF_BYTES` bytes; ``path`` for containers that
        must look further, such as zip member names) one of mine?"""
        raise NotImplementedError

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> Source:
        """Open ``path`` (already checked readable by :func:`open_source`)."""
        raise NotImplementedError

    # -- describing
    def tree(self) -> FileTree:
        """The file's structure (metadata only), computed once."""
        t = getattr(self, "_tree", None)
        if t is None:
            t = self._tree = self._walk()
        return t

    def _walk(self) -> FileTree:
        raise NotImplementedError

    def info(self) -> SourceInfo:
        return SourceInfo()

    def tensors(self) -> list[DatasetNode]:
        """Every numeric tensor: path ('/name'), shape and dtype as stored, file order."""
        return self.tree().numeric_datasets()

    def outside_references(self) -> list[str]:
        """References to data in other files (HDF5 external links...): none by default."""
        return []

    # -- reading
    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        """One whole tensor, as stored (no change of axes), after the safety checks."""
        raise NotImplementedError

    def read_as(self, path: str, dtype, *, hasher=None) -> np.ndarray:
        """One tensor cast to ``dtype``. ``hasher`` (a hashlib object) is fed the stored
        values exactly as :meth:`read` would give them (C order, the stored dtype).
        Implementations that can read in blocks override this."""
        a = self.read(path)
        if hasher is not None:
            hasher.update(memoryview(np.ascontiguousarray(a)).cast("B") if a.size else b"")
        return np.asarray(a).astype(np.dtype(dtype))

    #: whether :meth:`iter_rows` reads a block of rows at a time (else it is not offered)
    reads_rows: ClassVar[bool] = False

    def iter_rows(self, path: str, dtype, step: int, *, hasher=None):
        """``(first row, block)`` pairs of ``step`` rows cast to ``dtype``, each block a
        view of one buffer that the next overwrites; ``hasher`` as in :meth:`read_as`.
        Only where :attr:`reads_rows`."""
        raise NotImplementedError

    def view(self, path: str) -> np.ndarray:
        """A read-only array-like of one tensor as stored, for block-wise passes
        (statistics); implementations with memory maps return one."""
        return self.read(path)

    def stats(self, path: str):
        """:class:`~wtransplant.reading.stats.TensorStats` of one tensor, block by block."""
        from wtransplant.reading.stats import TensorStats, array_stats

        try:
            a = self.view(path)
        except InputError as e:
            return TensorStats(skipped=str(e).split(": ", 1)[-1])
        if a.dtype.kind not in "fiub":
            return TensorStats(skipped=f"not numeric ({a.dtype})")
        return array_stats(a)

    def stored_type(self, path: str) -> tuple:
        """(numpy dtype, shape) of a tensor as :meth:`read` returns it; (None, None) if
        unknown (then ``read`` says why)."""
        ds = self.tree().datasets.get("/" + path.lstrip("/"))
        if ds is None or not ds.numeric:
            return None, None
        try:
            return np.dtype(ds.dtype), tuple(ds.shape)
        except TypeError:
            return None, None

    # -- lifetime
    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# registry

#: implementations tried in order ("module:Class", imported on first use); the last one
#: (HDF5) takes every file the others do not claim and says why it cannot read it
REGISTRY: list[str] = [
    "wtransplant.reading.sources.safetensors:SafetensorsSource",
    "wtransplant.reading.sources.npz:NpySource",
    "wtransplant.reading.sources.npz:NpzSource",
    "wtransplant.reading.sources.onnxfile:OnnxSource",
    "wtransplant.reading.sources.hdf5:HDF5Source",
]


def register(spec: str, *, before: str = "wtransplant.reading.sources.hdf5:HDF5Source"
             ) -> None:
    """Add an implementation ("module:Class") to :data:`REGISTRY`, before ``before``."""
    if spec in REGISTRY:
        return
    i = REGISTRY.index(before) if before in REGISTRY else len(REGISTRY)
    REGISTRY.insert(i, spec)


def implementations() -> list[type[Source]]:
    out = []
    for spec in REGISTRY:
        mod, _, cls = spec.partition(":")
        out.append(getattr(importlib.import_module(mod), cls))
    return out


def open_source(path: str | os.PathLike, *, follow_links: bool = False,
                in_memory: bool = False) -> Source:
    """Open any supported source file read-only, choosing the implementation by content.

    Args:
        path: the file.
        follow_links: HDF5 only: allow external links, virtual datasets and external
            storage that point outside the file.
        in_memory: HDF5 only: read a small file into memory first (faster metadata walks).

    Raises:
        InputError: missing, unreadable, not a container wtransplant reads, or a header
            that contradicts the file (exit 2), in one line naming the file.
    """
    p = check_readable_file(path)
    head = read_head(p, SNIFF_BYTES)
    for impl in implementations():
        if impl.sniff(head, p):
            if impl.container != "hdf5":
                refuse_hdf5_polyglot(p, impl.container)
            return impl.open(p, follow_links=follow_links, in_memory=in_memory)
    raise InputError("not a file format wtransplant reads", path=str(p))  # HDF5 takes all


def refuse_hdf5_polyglot(p: Path, container: str) -> None:
    """A file that is another container and also HDF5 (an HDF5 superblock after a
    "userblock" holding, say, a safetensors header) is read differently by different
    programs: refused, as zip+HDF5 polyglots are (safety/polyglot.py)."""
    from wtransplant.errors import UnsafeInputError
    from wtransplant.safety.polyglot import hdf5_offsets

    try:
        with open(p, "rb") as fh:
            found = hdf5_offsets(fh, os.fstat(fh.fileno()).st_size)
    except OSError:
        return  # the opener reports it
    if found:
        raise UnsafeInputError(
            f"the file is both {container} and HDF5 (superblock at offset {found[0]}): a "
            f"polyglot that different readers would read as different weights; refused",
            path=str(p))


def as_source(src) -> Source:
    """A :class:`Source` for ``src``: itself, or an already open h5io ``OpenedSource``
    wrapped (callers holding one keep working)."""
    if isinstance(src, Source):
        return src
    from wtransplant.reading.sources.hdf5 import HDF5Source

    return HDF5Source.wrap(src)


# --------------------------------------------------------------------------------------
# helpers for containers without groups


def dtype_kind(dt: np.dtype) -> str:
    k = dt.kind
    return {"f": "float", "i": "int", "u": "uint", "b": "bool", "c": "complex",
            "S": "string", "U": "string", "O": "other", "V": "compound"}.get(k, "other")


def flat_tree(path: Path, display: str, file_size: int, nodes: list[DatasetNode],
              attrs: dict | None = None) -> FileTree:
    """A FileTree with one root group holding ``nodes`` (paths '/name') in file order."""
    root = GroupNode("/", dict(attrs or {}), [n.path[1:] for n in nodes])
    return FileTree(str(path), display, file_size, {"/": root},
                    {n.path: n for n in nodes}, {})


def tensor_node(name: str, shape, dtype: str, kind: str, nbytes: int, storage: int | None = None,
                attrs: dict | None = None) -> DatasetNode:
    """A DatasetNode for a tensor of a flat container."""
    return DatasetNode("/" + name, tuple(int(s) for s in shape), dtype, kind, "contiguous",
                       None, [], nbytes, nbytes if storage is None else storage,
                       dict(attrs or {}))


def check_limit(nbytes: int, shape, name: str, display: str, limit: int) -> None:
    """Refuse one tensor over the per-read limit, before allocating."""
    if nbytes > limit:
        raise InputError(f"{name} has shape {tuple(shape)} ({fmt_bytes(nbytes)}), over the "
                         f"{fmt_bytes(limit)} limit for one tensor", path=display)


def nbytes_of(shape, itemsize: int) -> int:
    return int(math.prod(shape)) * int(itemsize)


def is_numeric_kind(kind: str) -> bool:
    return kind in NUMERIC_KINDS
