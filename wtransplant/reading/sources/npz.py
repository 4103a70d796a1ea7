"""NumPy ``.npy`` and ``.npz`` files as :class:`~wtransplant.reading.sources.base.Source`\\ s.

``np.save`` writes one array (a ``.npy``: magic, header dict, data); ``np.savez`` /
``np.savez_compressed`` a zip of ``.npy`` members named after the keyword arguments, or
``arr_0``, ``arr_1``... for positional ones. Headers are read with NumPy's own header
parser and checked against the bytes there (:mod:`wtransplant.safety.bounds`: the same
rule as for fine-tuning data) before anything is allocated; object (pickled) arrays are
refused with one line naming the member; ``allow_pickle`` is never set. ``.npy`` files
and uncompressed members are read through read-only memory maps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from wtransplant._lazy import lazy
from wtransplant.errors import InputError
from wtransplant.reading.sources.base import (
    MAX_TENSOR_BYTES,
    Source,
    SourceInfo,
    check_limit,
    dtype_kind,
    flat_tree,
    nbytes_of,
    tensor_node,
)
from wtransplant.reading.tree import FileTree
from wtransplant.safety.bounds import check_declared, check_npz, npy_header

if TYPE_CHECKING:
    import zipfile

np = lazy("numpy")

NPY_MAGIC = b"\x93NUMPY"


def _dtype_name(dt: np.dtype) -> str:
    return str(dt.newbyteorder("=")) if dt.byteorder not in "|=" else str(dt)


class NpySource(Source):
    """One array written by ``np.save``; its tensor is named after the file's stem."""

    container = "npy"

    def __init__(self, path: Path, size: int, shape, dtype, fortran: bool, offset: int,
                 version: str):
        self.path = path
        self.display = str(path)
        self.file_size = size
        self.name = path.stem or "arr_0"
        self.shape, self.dtype, self.fortran, self.offset = tuple(shape), dtype, fortran, offset
        self.version = version

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        return head.startswith(NPY_MAGIC)

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> NpySource:
        display = str(path)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            shape, dtype, fortran, offset = npy_header(fh, display)
            fh.seek(6)
            version = f"{fh.read(1)[0]}.{fh.read(1)[0]}"
        check_declared(shape, dtype, size - offset, f"{display}!{path.stem}")
        return cls(path, size, shape, dtype, fortran, offset, version)

    def _walk(self) -> FileTree:
        n = nbytes_of(self.shape, self.dtype.itemsize)
        node = tensor_node(self.name, self.shape, _dtype_name(self.dtype),
                           dtype_kind(self.dtype), n)
        return flat_tree(self.path, self.display, self.file_size, [node])

    def info(self) -> SourceInfo:
        order = "Fortran" if self.fortran else "C"
        return SourceInfo("npy", "NumPy (np.save)", [
            f".npy version {self.version} header: shape {self.shape} {self.dtype} in "
            f"{order} order, checked against the {self.file_size - self.offset} bytes that "
            f"follow"])

    def _check(self, path: str) -> None:
        if path.lstrip("/") != self.name:
            raise InputError(f"no tensor {path.lstrip('/')!r} in the file (a .npy holds one "
                             f"array, {self.name!r})", path=self.display)

    def view(self, path: str) -> np.ndarray:
        self._check(path)
        if nbytes_of(self.shape, self.dtype.itemsize) == 0:
            return np.zeros(self.shape, self.dtype)
        try:
            m = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                          shape=(nbytes_of(self.shape, 1),))
            return m.reshape(self.shape, order="F" if self.fortran else "C")
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {self.name}: {e}", path=self.display) from None

    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        self._check(path)
        check_limit(nbytes_of(self.shape, self.dtype.itemsize), self.shape, self.name,
                    self.display, limit)
        m = self.view(path)
        out = np.empty(self.shape, self.dtype.newbyteorder("="))
        out[...] = m
        return out


class NpzSource(Source):
    """A zip of ``.npy`` members (``np.savez``/``np.savez_compressed``)."""

    container = "npz"

    def __init__(self, path: Path, size: int, members: dict, compressed: bool):
        self.path = path
        self.display = str(path)
        self.file_size = size
        self.members = members  # name -> (ZipInfo, shape, dtype, fortran, offset)
        self.compressed = compressed
        self._zf: zipfile.ZipFile | None = None

    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return False
        import zipfile  # (here: an HDF5 inspect does not pay its import)

        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return False  # the HDF5/.keras opener says what is wrong with the zip
        return bool(names) and all(n.endswith(".npy") for n in names)

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> NpzSource:
        import zipfile  # (here: an HDF5 inspect does not pay its import)
        display = str(path)
        check_npz(path)  # zip bombs, declared sizes, pickled members: refused here
        members = {}
        compressed = False
        try:
            with zipfile.ZipFile(path) as z:
                for zi in z.infolist():
                    name = zi.filename[:-4]
                    with z.open(zi) as fh:
                        shape, dtype, fortran, offset = npy_header(fh, f"{display}!{name}")
                    check_declared(shape, dtype, zi.file_size - offset, f"{display}!{name}")
                    if name in members:
                        raise InputError(f"the archive holds {name!r} twice; refused",
                                         path=display)
                    members[name] = (zi, tuple(shape), dtype, fortran, offset)
                    compressed |= zi.compress_type != zipfile.ZIP_STORED
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
            raise InputError(f"not a valid .npz (zip) file: {e}", path=display) from None
        return cls(path, os.path.getsize(path), members, compressed)

    def _walk(self) -> FileTree:
        nodes = []
        for name, (zi, shape, dtype, _, _) in self.members.items():
            nodes.append(tensor_node(name, shape, _dtype_name(dtype), dtype_kind(dtype),
                                     nbytes_of(shape, dtype.itemsize), zi.compress_size))
        return flat_tree(self.path, self.display, self.file_size, nodes)

    def info(self) -> SourceInfo:
        how = "np.savez_compressed" if self.compressed else "np.savez"
        names = list(self.members)
        positional = all(n == f"arr_{i}" for i, n in enumerate(names))
        ev = [f"zip archive of {len(names)} .npy members ({how}), every header checked "
              f"against its member's size",
              "positional arrays arr_0, arr_1, ... (no names)" if positional else
              f"arrays named by keyword, e.g. {names[0]!r}"]
        return SourceInfo("npz", f"NumPy ({how})", ev)

    def _member(self, path: str):
        name = path[1:] if path.startswith("/") else path
        m = self.members.get(name)
        if m is None:
            raise InputError(f"no array {name!r} in the archive (it holds "
                             f"{', '.join(list(self.members)[:8])})", path=self.display)
        return name, m

    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        import zipfile  # (here: an HDF5 inspect does not pay its import)
        name, (zi, shape, dtype, fortran, offset) = self._member(path)
        check_limit(nbytes_of(shape, dtype.itemsize), shape, name, self.display, limit)
        try:
            if self._zf is None:
                self._zf = zipfile.ZipFile(self.path)
            with self._zf.open(zi) as fh:
                a = np.lib.format.read_array(fh, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
            raise InputError(f"cannot read array {name!r}: {' '.join(str(e).split())[:200]}",
                             path=self.display) from None
        if a.shape != shape or a.dtype != dtype:
            raise InputError(f"array {name!r} read as {a.shape} {a.dtype}, its header said "
                             f"{shape} {dtype}", path=self.display)
        return np.array(a, dtype=dtype.newbyteorder("="), order="C")  # keeps shape ()

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()
            self._zf = None
