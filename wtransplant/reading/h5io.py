"""Opening HDF5 files (and Keras ``.keras`` archives) read-only and safely.

Everything wtransplant reads goes through :func:`open_source`. It

* checks the path (exists, is a file, readable, not empty) and names the problem in one line;
* recognises a Keras 3 ``.keras`` zip archive, refuses member names that escape the archive,
  and opens the inner ``model.weights.h5`` without extracting anything next to the input;
* opens HDF5 read-only, never follows external links, never reads virtual datasets or
  datasets with external raw storage unless ``follow_links=True``;
* refuses to read a dataset that declares far more bytes than it stores (a shape bomb)
  before any allocation.

Only ``h5py`` and the standard library are imported here.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wtransplant._lazy import lazy
from wtransplant.errors import InputError, UnsafeInputError

h5py = lazy("h5py")
np = lazy("numpy")

if TYPE_CHECKING:
    import zipfile

#: A dataset declaring more than this many bytes and more than MAX_EXPANSION times what it
#: stores on disk is refused (same rule as Keras 3.15's ``safe_get_h5_dataset``).
BOMB_FLOOR_BYTES = 1 << 32
MAX_EXPANSION = 1000
#: Upper bound on one tensor read into memory, whatever the file says (override per call).
MAX_TENSOR_BYTES = 16 << 30

KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
KERAS_ARCHIVE_CONFIG = "config.json"
KERAS_ARCHIVE_METADATA = "metadata.json"
# Above this size the inner weights of a .keras archive go to a private temp file
# instead of memory.
_INMEMORY_LIMIT = 64 << 20

MAT5_MAGIC = b"MATLAB 5.0 MAT-file"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class ArchiveInfo:
    """What a Keras 3 ``.keras`` zip holds, read without executing anything."""

    members: list[str]
    config: dict | None = None
    metadata: dict | None = None
    inner: str = KERAS_ARCHIVE_WEIGHTS


@dataclass
class OpenedSource:
    """An open, read-only HDF5 handle plus what we learned while opening it."""

    path: Path
    h5: h5py.File
    file_size: int
    userblock: bytes = b""
    archive: ArchiveInfo | None = None
    follow_links: bool = False
    _cleanup: list = field(default_factory=list, repr=False)

    @property
    def display(self) -> str:
        if self.archive:
            return f"{self.path}!{self.archive.inner}"
        return str(self.path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.h5.close()
        for fn in reversed(self._cleanup):
            with contextlib.suppress(Exception):
                fn()
        self._cleanup.clear()

    def __enter__(self) -> OpenedSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_readable_file(path: str | os.PathLike) -> Path:
    """Return ``Path(path)`` if it is a readable, non-empty regular file; else InputError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError("no such file", path=str(p)) from None
    except PermissionError:
        raise InputError("permission denied", path=str(p)) from None
    except OSError as e:
        raise InputError(f"cannot stat: {e.strerror or e}", path=str(p)) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory, not a file", path=str(p))
    if not stat.S_ISREG(st.st_mode):
        raise InputError("not a regular file", path=str(p))
    if not os.access(p, os.R_OK):
        raise InputError("permission denied (not readable)", path=str(p))
    if st.st_size == 0:
        raise InputError("empty file (0 bytes)", path=str(p))
    from wtransplant.safety.paths import note_input
    from wtransplant.safety.polyglot import check_single_format

    note_input(p)
    check_single_format(p)  # never a file two parsers read differently
    return p


def read_head(p: Path, n: int = 1024) -> bytes:
    """The first ``n`` bytes of ``p``; an unreadable file is one InputError line."""
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except PermissionError:
        raise InputError("permission denied", path=str(p)) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", path=str(p)) from None


def _userblock(h5: h5py.File) -> int:
    try:
        return int(h5.userblock_size)
    except Exception:
        return 0


#: ``open_source(..., in_memory=True)`` reads files up to this size into memory (HDF5's
#: core driver): walking many small objects is then much faster than through read calls.
IN_MEMORY_LIMIT = 256 << 20


def _open_h5(target, display: str, *, follow_links: bool, in_memory: bool = False
             ) -> h5py.File:
    # rdcc_nbytes=0: no per-dataset chunk cache is allocated on open, which makes walking
    # files with many thousands of datasets markedly faster; reads of whole tensors do not
    # need it.
    kw = {"driver": "core", "backing_store": False} if in_memory else {}
    try:
        return h5py.File(target, "r", rdcc_nbytes=0, rdcc_nslots=1, **kw)
    except PermissionError:
        raise InputError("permission denied", path=display) from None
    except (OSError, ValueError) as e:
        msg = str(e).split("(")[0].strip() or type(e).__name__
        raise InputError(
            f"not a readable HDF5 file: it has an HDF5 signature but the library cannot open it "
            f"({msg}); the file may be truncated or corrupt",
            path=display,
        ) from None


def open_source(path: str | os.PathLike, *, follow_links: bool = False,
                in_memory: bool = False) -> OpenedSource:
    """Open an HDF5 file, MAT v7.3 file or ``.keras`` archive read-only.

    Args:
        path: the file.
        follow_links: allow external links, virtual datasets and external storage that
            point outside the file.
        in_memory: read the whole file into memory first (faster metadata walks).

    Returns:
        An :class:`OpenedSource` (a context manager: use it in a ``with`` block).

    Raises:
        InputError: a one-line message for anything that is not one of those files
            (missing, unreadable, truncated, not HDF5) (exit 2).
        UnsafeInputError: a ``.keras`` archive whose member paths escape it (exit 2).
    """
    p = check_readable_file(path)
    size = p.stat().st_size
    head = read_head(p)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _open_keras_archive(p, size, follow_links=follow_links)
    if not h5py.is_hdf5(str(p)):
        if head.startswith(MAT5_MAGIC):
            raise InputError(
                "MATLAB v5 MAT-file, not v7.3 (HDF5): re-save it in MATLAB with "
                "save(..., '-v7.3') or read it with scipy.io.loadmat",
                path=str(p),
            )
        kind = "text" if _looks_like_text(head) else "binary data"
        raise InputError(f"not an HDF5 file (no HDF5 signature found; looks like {kind})",
                         path=str(p))
    h5 = _open_h5(str(p), str(p), follow_links=follow_links,
                  in_memory=in_memory and size <= IN_MEMORY_LIMIT)
    ub = _userblock(h5)
    userblock = head[: min(ub, 128)] if ub else b""
    return OpenedSource(path=p, h5=h5, file_size=size, userblock=userblock,
                        follow_links=follow_links)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _safe_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts = name.replace("\\", "/").split("/")
    return ".." not in parts


def read_archive_info(zf: zipfile.ZipFile, display: str) -> ArchiveInfo:
    """Validate a ``.keras`` zip's member list and read its JSON config and metadata."""
    import zipfile

    try:
        return _read_archive_info(zf, display)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        raise InputError(f"corrupt zip archive: {e}", path=display) from None


def _read_archive_info(zf: zipfile.ZipFile, display: str) -> ArchiveInfo:
    names = zf.namelist()
    bad = [n for n in names if not _safe_member(n)]
    if bad:
        raise UnsafeInputError(
            f"refusing a zip archive with a member path that escapes the archive: {bad[0]!r}",
            path=display,
        )
    info = ArchiveInfo(members=names)
    for key, attr in ((KERAS_ARCHIVE_CONFIG, "config"), (KERAS_ARCHIVE_METADATA, "metadata")):
        if key in names:
            zi = zf.getinfo(key)
            if zi.file_size > 64 << 20:
                raise UnsafeInputError(f"{key} inside the archive is implausibly large "
                                       f"({zi.file_size} bytes)", path=display)
            try:
                from wtransplant.safety.configs import loads

                value = loads(zf.read(key), f"{display}!{key}")
                if not isinstance(value, dict):
                    raise InputError(f"{key} inside the archive is JSON but not an object "
                                     f"({type(value).__name__})", path=display)
                setattr(info, attr, value)
            except (ValueError, UnicodeDecodeError) as e:
                raise InputError(f"{key} inside the archive is not valid JSON: {e}",
                                 path=display) from None
    return info


def _open_keras_archive(p: Path, size: int, *, follow_links: bool) -> OpenedSource:
    import zipfile  # here: an HDF5 inspect does not pay its import

    display = str(p)
    try:
        zf = zipfile.ZipFile(p, "r")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputError(f"a zip archive that cannot be read ({e})", path=display) from None
    try:
        return _open_inner(zf, p, size, display, follow_links)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise InputError(f"corrupt zip archive: {e}", path=display) from None


def _open_inner(zf, p: Path, size: int, display: str, follow_links: bool) -> OpenedSource:
    try:
        info = read_archive_info(zf, display)
        if KERAS_ARCHIVE_WEIGHTS not in info.members:
            what = ", ".join(info.members[:5]) or "nothing"
            raise InputError(
                f"a zip archive but not a Keras archive: no {KERAS_ARCHIVE_WEIGHTS} inside "
                f"(it holds {what})",
                path=display,
            )
        zi = zf.getinfo(KERAS_ARCHIVE_WEIGHTS)
        if zi.file_size > BOMB_FLOOR_BYTES and zi.file_size > MAX_EXPANSION * max(
                zi.compress_size, 1):
            raise UnsafeInputError(
                f"{KERAS_ARCHIVE_WEIGHTS} inside the archive declares {fmt_bytes(zi.file_size)}"
                f" but compresses to {fmt_bytes(zi.compress_size)}; refusing a possible zip "
                f"bomb", path=display)
        cleanup = []
        if zi.file_size <= _INMEMORY_LIMIT:
            target = io.BytesIO(zf.read(KERAS_ARCHIVE_WEIGHTS))
        else:
            import tempfile

            tmpdir = tempfile.mkdtemp(prefix="wtransplant-")
            tmp = os.path.join(tmpdir, "model.weights.h5")
            with zf.open(KERAS_ARCHIVE_WEIGHTS) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            target = tmp

            def _rm(tmp=tmp, tmpdir=tmpdir):
                os.unlink(tmp)
                os.rmdir(tmpdir)

            cleanup.append(_rm)
    finally:
        zf.close()
    h5 = _open_h5(target, f"{display}!{KERAS_ARCHIVE_WEIGHTS}", follow_links=follow_links)
    return OpenedSource(path=p, h5=h5, file_size=size, archive=info, follow_links=follow_links,
                        _cleanup=cleanup)


# --------------------------------------------------------------------------------------
# Safe dataset access


def link_kind(group: h5py.Group, name: str) -> str:
    """'hard', 'soft', 'external' or 'missing' for ``name`` in ``group``, never following."""
    try:
        lnk = group.get(name, getlink=True)
    except (KeyError, ValueError):
        return "missing"
    if lnk is None:
        return "missing"
    if isinstance(lnk, h5py.ExternalLink):
        return "external"
    if isinstance(lnk, h5py.SoftLink):
        return "soft"
    return "hard"


def resolve_dataset(src: OpenedSource, path: str) -> h5py.Dataset:
    """The dataset at ``path``, walking component by component and refusing external links,
    soft links that leave the file, virtual datasets and external storage (unless the source
    was opened with ``follow_links``)."""
    parts = [x for x in path.strip("/").split("/") if x]
    node: h5py.Group = src.h5["/"]
    where = ""
    for i, part in enumerate(parts):
        where = f"{where}/{part}"
        kind = link_kind(node, part)
        if kind == "missing":
            raise InputError(f"no dataset {where!r} in the file", path=src.display)
        if kind == "external" and not src.follow_links:
            lnk = node.get(part, getlink=True)
            raise UnsafeInputError(
                f"{where} is an external link to {lnk.filename}:{lnk.path}; not followed "
                f"(pass follow_links=True to allow it)",
                path=src.display,
            )
        try:
            obj = node[part]
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise InputError(f"cannot open {where}: {str(e).split('(')[0].strip()}",
                             path=src.display) from None
        if i < len(parts) - 1:
            if not isinstance(obj, h5py.Group):
                raise InputError(f"{where} is not a group", path=src.display)
            node = obj
        else:
            if not isinstance(obj, h5py.Dataset):
                raise InputError(f"{where} is a group, not a dataset", path=src.display)
            check_dataset_safe(obj, src)
            return obj
    raise InputError("empty dataset path", path=src.display)


def check_dataset_safe(ds: h5py.Dataset, src: OpenedSource) -> None:
    if not src.follow_links:
        if ds.is_virtual:
            files = sorted({vs.file_name for vs in ds.virtual_sources()})
            outside = [f for f in files if f != "."]
            if outside:
                raise UnsafeInputError(
                    f"{ds.name} is a virtual dataset reading from {', '.join(outside)}; not "
                    f"followed (pass follow_links=True to allow it)",
                    path=src.display,
                )
        if ds.external:
            raise UnsafeInputError(
                f"{ds.name} keeps its data in external file(s) "
                f"{', '.join(str(e[0]) for e in ds.external)}; not read (pass follow_links=True "
                f"to allow it)",
                path=src.display,
            )
    check_not_bomb(ds, src.display)


def declared_nbytes(ds: h5py.Dataset) -> int:
    try:
        itemsize = int(ds.dtype.itemsize)
    except (ValueError, TypeError) as e:  # a datatype h5py cannot map (corrupt or exotic)
        raise InputError(f"{ds.name}: unsupported datatype: {e}") from None
    return int(math.prod(ds.shape or ())) * itemsize


def check_not_bomb(ds: h5py.Dataset, display: str, limit: int = MAX_TENSOR_BYTES) -> None:
    declared = declared_nbytes(ds)
    if ds.is_virtual or ds.external:
        return  # stored bytes are elsewhere by construction; followed only when asked
    stored = int(ds.id.get_storage_size())
    if declared > BOMB_FLOOR_BYTES and declared > MAX_EXPANSION * stored:
        raise UnsafeInputError(
            f"{ds.name} declares shape {tuple(ds.shape)} ({fmt_bytes(declared)}) but stores "
            f"only {fmt_bytes(stored)}; refusing to read a possible shape/decompression bomb",
            path=display,
        )
    if declared > limit:
        raise InputError(
            f"{ds.name} has shape {tuple(ds.shape)} ({fmt_bytes(declared)}), over the "
            f"{fmt_bytes(limit)} limit for one tensor",
            path=display,
        )


def read_dataset(src: OpenedSource, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """Read one whole dataset as a NumPy array, after the safety checks."""
    ds = resolve_dataset(src, path)
    if limit != MAX_TENSOR_BYTES:
        check_not_bomb(ds, src.display, limit)
    try:
        return ds[()]
    except (OSError, TypeError, ValueError, RuntimeError, KeyError) as e:
        raise InputError(f"cannot read dataset {ds.name}: {str(e).split('(')[0].strip()}",
                         path=src.display) from None


#: a source tensor that must change dtype is read and cast this many bytes at a time
READ_BLOCK_BYTES = 16 << 20


def read_dataset_as(src: OpenedSource, path: str, dtype, *, hasher=None) -> np.ndarray:
    """Read one whole dataset straight into an array of ``dtype``, a block of rows at a
    time: a float64 source of a float32 variable is never held whole as float64. With
    ``hasher`` (a hashlib object), the stored values are fed to it block by block, exactly
    the bytes :func:`read_dataset`'s array would give (C order, the file's dtype)."""
    ds = resolve_dataset(src, path)
    dtype = np.dtype(dtype)
    try:
        if ds.ndim == 0 or ds.shape[0] == 0:
            a = ds[()]
            if hasher is not None:
                hasher.update(memoryview(np.ascontiguousarray(a)).cast("B") if a.size else b"")
            return np.asarray(a).astype(dtype)
        out = np.empty(ds.shape, dtype)
        row = max(1, ds.dtype.itemsize * (out.size // ds.shape[0]))
        step = max(1, READ_BLOCK_BYTES // row)
        for a in range(0, ds.shape[0], step):
            block = ds[a:a + step]
            if hasher is not None and block.size:
                hasher.update(memoryview(np.ascontiguousarray(block)).cast("B"))
            out[a:a + step] = block
            del block
        return out
    except (OSError, TypeError, ValueError, RuntimeError, KeyError) as e:
        raise InputError(f"cannot read dataset {ds.name}: {str(e).split('(')[0].strip()}",
                         path=src.display) from None


def iter_rows(src: OpenedSource, path: str, dtype, step: int, *, hasher=None):
    """One dataset of at least one axis as ``(first row, block)`` pairs of ``step`` rows,
    cast to ``dtype``; each block is a view of one buffer that the next block overwrites.
    ``hasher`` is fed the stored values as :func:`read_dataset_as` feeds it. A dataset
    already of ``dtype`` is read straight into the buffer (no other copy)."""
    ds = resolve_dataset(src, path)
    dtype = np.dtype(dtype)
    n = ds.shape[0]
    buf = np.empty((min(step, n),) + tuple(ds.shape[1:]), dtype)
    try:
        for a in range(0, n, step):
            b = min(a + step, n)
            block = buf[:b - a]
            if ds.dtype == dtype:
                ds.read_direct(block, np.s_[a:b], np.s_[0:b - a])
                stored = block
            else:
                stored = ds[a:b]
                block[...] = stored
            if hasher is not None and stored.size:
                hasher.update(memoryview(np.ascontiguousarray(stored)).cast("B"))
            del stored
            yield a, block
    except (OSError, TypeError, ValueError, RuntimeError, KeyError) as e:
        raise InputError(f"cannot read dataset {ds.name}: {str(e).split('(')[0].strip()}",
                         path=src.display) from None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def root_comment(h5: h5py.File) -> str | None:
    """The HDF5 object comment of the root group (GNU Octave writes its version there).

    h5py's ``h5o.get_comment`` returns garbage in h5py 3.14, so this asks the HDF5 library
    h5py loaded (:func:`~wtransplant.reading._fasth5.hdf5_library`), under h5py's lock;
    any failure just means "no comment"."""
    try:
        import contextlib
        import ctypes

        from wtransplant.reading._fasth5 import hdf5_library, phil

        lib = hdf5_library()
        if lib is None:
            return None
        lock = phil()
        fn = lib.H5Oget_comment
        fn.restype = ctypes.c_ssize_t
        fn.argtypes = [ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t]
        with lock if lock is not None else contextlib.nullcontext():
            n = fn(h5.id.id, None, 0)
            if n <= 0 or n > 1 << 16:
                return None
            buf = ctypes.create_string_buffer(n + 1)
            fn(h5.id.id, buf, n + 1)
        return buf.value.decode("utf-8", "replace")
    except Exception:
        return None
