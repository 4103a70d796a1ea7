"""A fast metadata probe for the tree walk: direct calls into the HDF5 library h5py loaded.

Walking a file with thousands of datasets through h5py's object wrappers costs about 1.5x
what the same HDF5 calls cost directly (each wrapper is created, registered, locked and
freed). For the few facts the walk needs per object (type, shape, datatype class and size,
contiguous offset, stored bytes, attribute count) this module calls the same library
through ctypes, holding h5py's global lock, and closes every id it opens.

It is an optimisation only: :func:`probe` returns None for anything unusual and the walk
then uses h5py. ``WTRANSPLANT_NO_FASTH5=1`` turns it off; tests check both paths give
identical trees on every fixture.

Decided by measurement (issue 15, round two; ``bench/bench_inspect.py --decide`` repeats
it: in-process walks of that benchmark's files, h5py's public low-level API path of
tree.py vs this probe, interleaved, the same tree asserted, medians, on a 2-core machine
shared with other work):

=========  ===========  ===========  =====  ===========================
datasets   h5py API     this probe   ratio  HDF5 open/close of each one
=========  ===========  ===========  =====  ===========================
100        7.5 ms       7.1 ms       0.95x  0.7 ms
2,000      190 ms       131 ms       0.69x  53 ms
5,000      568 ms       384 ms       0.68x  148 ms
20,000     2.29 s       2.16 s*      0.94x  0.64 s
200,000    34.9 s       23.4 s       0.67x  6.1 s
=========  ===========  ===========  =====  ===========================

(* 3 repeats on a busy machine; the other 20,000 run gave 0.67x.) It wins by about 1.5x
from 2,000 datasets up, so it stays there; below :data:`FAST_MIN` objects the walk uses
h5py only (loading the library here costs more than it saves). The two-process split of
the first round (a forked helper probing half the objects) was removed: measured 25.4 s vs
23.4 s serial at 200,000 datasets, no gain on a shared 2-core machine, for a fork of a
process holding an open HDF5 file.

Safe in the ways that matter: the library is the one already mapped into this process
(found in ``/proc/self/maps`` and opened with ``RTLD_NOLOAD``, so a second copy is never
loaded; elsewhere h5py's bundled library, and only if its version is h5py's), h5py's global
lock is held throughout (no lock found: no fast path), every id opened is closed, and
anything but a plain float/integer dataset or a group goes through h5py.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re

import h5py

_HADDR_UNDEF = (1 << 64) - 1
_lib = None
_failed = False


class _Lib:
    def __init__(self, lib):
        hid = ctypes.c_int64

        def fn(name, res, args):
            f = getattr(lib, name)
            f.restype = res
            f.argtypes = args
            return f

        self.Oopen = fn("H5Oopen", hid, [hid, ctypes.c_char_p, hid])
        self.Oclose = fn("H5Oclose", ctypes.c_int, [hid])
        self.Iget_type = fn("H5Iget_type", ctypes.c_int, [hid])
        self.Dget_space = fn("H5Dget_space", hid, [hid])
        self.Sget_simple_extent_dims = fn("H5Sget_simple_extent_dims", ctypes.c_int,
                                          [hid, ctypes.POINTER(ctypes.c_uint64),
                                           ctypes.POINTER(ctypes.c_uint64)])
        self.Sclose = fn("H5Sclose", ctypes.c_int, [hid])
        self.Dget_type = fn("H5Dget_type", hid, [hid])
        self.Tget_class = fn("H5Tget_class", ctypes.c_int, [hid])
        self.Tget_size = fn("H5Tget_size", ctypes.c_size_t, [hid])
        self.Tget_order = fn("H5Tget_order", ctypes.c_int, [hid])
        self.Tget_sign = fn("H5Tget_sign", ctypes.c_int, [hid])
        self.Tclose = fn("H5Tclose", ctypes.c_int, [hid])
        self.Tequal = fn("H5Tequal", ctypes.c_int, [hid, hid])
        self.Dget_offset = fn("H5Dget_offset", ctypes.c_uint64, [hid])
        self.Dget_storage_size = fn("H5Dget_storage_size", ctypes.c_uint64, [hid])
        self.Aget_num_attrs = fn("H5Aget_num_attrs", ctypes.c_int, [hid])
        self.dims = (ctypes.c_uint64 * 64)()
        from h5py import h5i, h5t

        self.DATASET = h5i.DATASET
        self.GROUP = h5i.GROUP
        self.FLOAT = h5t.FLOAT
        self.INTEGER = h5t.INTEGER
        self.ORDER_BE = h5t.ORDER_BE
        self.SGN_NONE = h5t.SGN_NONE


#: the HDF5 library's file name (h5py's wheels add a hash: libhdf5-8c29085d.so.310.5.1)
_LIBNAME = re.compile(r"libhdf5(-[0-9a-f]+)?\.(so|dylib)")


def _candidates() -> list[str]:
    """Paths of the HDF5 library: those mapped into this process first (Linux), then the
    one h5py's wheel bundles."""
    out: list[str] = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and _LIBNAME.match(os.path.basename(parts[5].strip())):
                    p = parts[5].strip()
                    if p not in out:
                        out.append(p)
    except OSError:
        pass
    libdir = os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs")
    out += [p for p in sorted(glob.glob(os.path.join(libdir, "libhdf5*")))
            if _LIBNAME.match(os.path.basename(p)) and p not in out]
    return out


_hdf5 = None
_hdf5_searched = False


def hdf5_library() -> ctypes.CDLL | None:
    """The HDF5 library h5py itself uses, as a ctypes handle, or None. Only a library
    already in the process (``RTLD_NOLOAD``: never a second copy with its own global
    state), of h5py's HDF5 version, 1.10 or newer (64-bit ``hid_t``). Callers hold h5py's
    lock (:func:`phil`) while they call into it."""
    global _hdf5, _hdf5_searched
    if _hdf5_searched:
        return _hdf5
    _hdf5_searched = True
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LOCAL", 0)
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path, mode=mode)
            maj, mnr, rel = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
            lib.H5get_libversion(ctypes.byref(maj), ctypes.byref(mnr), ctypes.byref(rel))
            if (maj.value, mnr.value, rel.value) != tuple(h5py.version.hdf5_version_tuple[:3]):
                continue
            if maj.value < 1 or (maj.value == 1 and mnr.value < 10):
                continue
            _hdf5 = lib
            break
        except (OSError, AttributeError, TypeError, ValueError):
            continue
    return _hdf5


def _load() -> _Lib | None:
    global _lib, _failed
    if _lib is not None or _failed:
        return _lib
    if os.environ.get("WTRANSPLANT_NO_FASTH5") or phil() is None:
        _failed = True
        return None
    lib = hdf5_library()
    try:
        _lib = _Lib(lib) if lib is not None else None
    except (AttributeError, TypeError, ValueError):
        _lib = None
    _failed = _lib is None
    return _lib


def phil():
    """h5py's global lock (held by every h5py call into HDF5), or None."""
    return getattr(getattr(h5py, "_objects", None), "phil", None)


class Prober:
    """Probe many objects of one open file; use as a context manager (holds h5py's lock)."""

    def __init__(self, h5file: h5py.File):
        self.lib = _load()
        self.fid = h5file.id.id
        self._lock = phil()
        # the previous dataset's type (kept open until __exit__) and its description: weight
        # files store most tensors in one type, so one H5Tequal usually replaces four queries
        self._last_tid = -1
        self._last_type = None

    @property
    def ok(self) -> bool:
        return self.lib is not None

    def __enter__(self):
        if self._lock is not None:
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        try:
            if self._last_tid >= 0:
                self.lib.Tclose(self._last_tid)
                self._last_tid = -1
        finally:
            if self._lock is not None:
                self._lock.release()

    def probe_all(self, names: list[bytes]) -> list:
        with self:
            return [self.probe(n) for n in names]

    def _type(self, tid):
        """(class, size, big_endian, signed) of a dataset's type, or None if it is not a
        plain float or integer. Takes ownership of ``tid``."""
        L = self.lib
        if self._last_tid >= 0 and L.Tequal(tid, self._last_tid) > 0:
            L.Tclose(tid)
            return self._last_type
        cls = L.Tget_class(tid)
        if cls not in (L.FLOAT, L.INTEGER):
            L.Tclose(tid)
            return None
        desc = (cls, L.Tget_size(tid), L.Tget_order(tid) == L.ORDER_BE,
                cls == L.FLOAT or L.Tget_sign(tid) != L.SGN_NONE)
        if self._last_tid >= 0:
            L.Tclose(self._last_tid)
        self._last_tid, self._last_type = tid, desc
        return desc

    def probe(self, name: bytes):
        """('group', nattrs) or ('dataset', shape, class, size, big_endian, signed,
        contiguous_offset|None, storage, nattrs) or None when h5py should handle it."""
        L = self.lib
        oid = L.Oopen(self.fid, name, 0)
        if oid < 0:
            return None
        try:
            t = L.Iget_type(oid)
            nattrs = L.Aget_num_attrs(oid)
            if t == L.GROUP:
                return ("group", nattrs)
            if t != L.DATASET:
                return None
            sid = L.Dget_space(oid)
            if sid < 0:
                return None
            try:
                # returns the rank; HDF5 caps it at 32 (H5S_MAX_RANK), the buffer holds 64
                n = L.Sget_simple_extent_dims(sid, L.dims, None)
                if n < 0 or n > 64:
                    return None
                shape = tuple(L.dims[:n])
            finally:
                L.Sclose(sid)
            tid = L.Dget_type(oid)
            if tid < 0:
                return None
            desc = self._type(tid)
            if desc is None:
                return None
            cls, size, be, signed = desc
            off = L.Dget_offset(oid)
            storage = L.Dget_storage_size(oid)
            return ("dataset", shape, cls, size, be, signed,
                    None if off == _HADDR_UNDEF else off, storage, nattrs)
        finally:
            L.Oclose(oid)


#: files with fewer objects than this are walked through h5py alone
FAST_MIN = 1000


def probe_many(h5file: h5py.File, names: list[bytes]) -> list:
    """:meth:`Prober.probe` for each name (None where h5py must handle the object)."""
    if len(names) < FAST_MIN:
        return [None] * len(names)
    prober = Prober(h5file)
    if not prober.ok:
        return [None] * len(names)
    return prober.probe_all(names)
