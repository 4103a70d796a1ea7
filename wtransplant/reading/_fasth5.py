"""A fast metadata probe for the tree walk: direct calls into the HDF5 library h5py loaded.

Walking a file with tens of thousands of datasets through h5py's object wrappers costs
about three times what the HDF5 calls themselves cost (each wrapper is created, locked and
garbage-collected). For the few facts the walk needs per object (type, shape, datatype
class and size, contiguous offset, stored bytes, attribute count) this module calls the
same library through ctypes, holding h5py's global lock, and closes every id it opens.

It is an optimisation only: :func:`probe` returns None for anything unusual and the walk
then uses h5py. ``WTRANSPLANT_NO_FASTH5=1`` turns it off; tests check both paths give
identical trees.

Kept by measurement (issue 15; ``bench/bench_inspect.py --decide`` repeats it): the same
facts through h5py's public low-level API (``h5o.open``, ``get_space``, ``get_type`` with
one ``TypeID ==`` against the previous type, ``get_offset``, ``get_storage_size``,
``h5a.get_num_attrs``) cost 1.5x what these calls cost at 2,000 and at 20,000 datasets
(0.119 s vs 0.072 s; 1.37 s vs 0.92 s; HDF5's own open/close of every object: 0.05 s and
0.60 s), on a 2-core machine shared with other work. Below :data:`FAST_MIN` objects the
walk uses h5py only: loading the library here (about 10 ms) costs more than it saves.
It is safe in the ways that matter: the library is the one h5py loaded (same version, or
nothing), every id opened is closed, h5py's global lock is held throughout, and anything
but a plain float/integer dataset or a group goes through h5py.

:func:`probe_many` probes a very large file's objects in two processes at once on Linux (a
forked helper takes the second half and sends its tuples back through a pipe); the HDF5
library holds one global lock, so threads cannot share this work. Measured: 17.6 s vs
24.1 s serial at 200,000 datasets, but no gain (2.25 s vs 2.0 s) at 20,000 on a busy
2-core machine, hence :data:`PARALLEL_MIN`.
"""

from __future__ import annotations

import ctypes
import glob
import marshal
import os
import signal
import sys
import threading
import warnings

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


def _load() -> _Lib | None:
    global _lib, _failed
    if _lib is not None or _failed:
        return _lib
    if os.environ.get("WTRANSPLANT_NO_FASTH5"):
        _failed = True
        return None
    try:
        libdir = os.path.join(os.path.dirname(h5py.__file__), os.pardir, "h5py.libs")
        cands = sorted(glob.glob(os.path.join(libdir, "libhdf5-*.so*")))
        if cands:
            lib = ctypes.CDLL(cands[0])
        else:  # h5py built against a system libhdf5: it is already in the process
            lib = ctypes.CDLL(None)
            lib.H5Oopen  # noqa: B018  (raises AttributeError if not loaded)
        # the library must be the one h5py uses: compare versions
        maj, mnr, rel = ctypes.c_uint(), ctypes.c_uint(), ctypes.c_uint()
        lib.H5get_libversion(ctypes.byref(maj), ctypes.byref(mnr), ctypes.byref(rel))
        if (maj.value, mnr.value, rel.value) != tuple(h5py.version.hdf5_version_tuple[:3]):
            raise OSError("HDF5 version mismatch")
        if maj.value < 1 or (maj.value == 1 and mnr.value < 10):
            raise OSError("HDF5 < 1.10: hid_t is not 64-bit")
        _lib = _Lib(lib)
    except Exception:
        _failed = True
        _lib = None
    return _lib


def _phil():
    return getattr(getattr(h5py, "_objects", None), "phil", None)


class Prober:
    """Probe many objects of one open file; use as a context manager (holds h5py's lock)."""

    def __init__(self, h5file: h5py.File):
        self.lib = _load()
        self.fid = h5file.id.id
        self._lock = _phil()
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
#: files with at least this many objects are probed by two processes at once
PARALLEL_MIN = 50000
#: libraries whose threads make forking unsafe once they are loaded
_THREADED = ("tensorflow", "jax", "torch")


def _parallel_ok(n: int) -> bool:
    if n < PARALLEL_MIN or not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    if any(m in sys.modules for m in _THREADED) or threading.active_count() > 1:
        return False  # another thread could hold a lock the helper needs
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) >= 2


def _die_with_parent(parent: int) -> None:
    """The helper must not outlive the walk: if the parent is killed (a time limit), the
    kernel kills the helper too (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def probe_many(h5file: h5py.File, names: list[bytes]) -> list:
    """:meth:`Prober.probe` for each name (None where h5py must handle the object)."""
    if len(names) < FAST_MIN:
        return [None] * len(names)
    prober = Prober(h5file)
    if not prober.ok:
        return [None] * len(names)
    if not _parallel_ok(len(names)):
        return prober.probe_all(names)
    half = len(names) // 2
    theirs = _probe_in_helper(prober, names[half:])
    try:
        mine = prober.probe_all(names[:half])
    except BaseException:  # interrupted: the helper must not linger
        theirs(kill=True)
        raise
    rest = theirs()
    if rest is None:  # the helper failed: do its half here
        rest = prober.probe_all(names[half:])
    return mine + rest


def _probe_in_helper(prober: Prober, names: list[bytes]):
    """Fork a helper that probes ``names``; return a function that collects its answer
    (None if it failed). Called without h5py's lock held, so the helper starts unlocked."""
    parent = os.getpid()
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking with native threads (OpenBLAS' idle workers):
        # the helper only calls HDF5 and writes to a pipe
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the helper: no Python cleanup, no buffered output of the parent
        try:
            os.close(r)
            _die_with_parent(parent)
            data = marshal.dumps(prober.probe_all(names))
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(w)

    def collect(kill: bool = False):
        chunks = []
        try:
            if kill:
                os.kill(pid, signal.SIGKILL)
            while not kill:
                b = os.read(r, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(r)
            _, status = os.waitpid(pid, 0)
        if kill or os.waitstatus_to_exitcode(status) != 0:
            return None
        try:
            # our own helper's tuples of ints, bools and None (marshal runs no code)
            out = marshal.loads(b"".join(chunks))
        except (EOFError, ValueError, TypeError):
            return None
        return out if isinstance(out, list) and len(out) == len(names) else None

    return collect
