"""The metadata walk of a plain HDF5 file without importing h5py or NumPy.

``wtransplant inspect`` of a 100-dataset weight file spends most of its time importing NumPy
and h5py, which it does not need to list groups, shapes, dtypes and small attributes.
:func:`walk_lean` calls the HDF5 library h5py's wheel bundles directly (ctypes) and builds
the same :class:`~wtransplant.reading.tree.FileTree` the h5py walk builds, attribute values
decoded the way :func:`~wtransplant.reading.walk_h5py.decode_value` decodes what h5py
returns. Tests compare the two trees on every fixture.

It is a fast path with a strict scope, never a second opinion: anything it does not handle
exactly (soft, external or user-defined links, committed datatypes, virtual or external
storage, references in attributes, compounds, enums, vlen data other than strings and
MATLAB's field lists, space-padded strings, undecodable names, attributes over
:data:`MAX_ATTR_BYTES`, a root whose header HDF5 cannot size, a library it cannot find or
an HDF5 call that fails) makes it return None, and the caller walks the file with h5py, which
then gives the canonical result or error. It runs only when h5py is not imported yet in
this process, and only while no other Python thread runs, so nothing else calls the
library meanwhile (h5py's wheels build it without thread safety); it loads the
very file h5py would load (``h5py.libs/libhdf5-*.so`` of the installed wheel), so a later
``import h5py`` in the same process maps no second copy (tested). Linux only.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
import threading

from wtransplant.reading.tree import (
    FILTER_NAMES,
    LAYOUT_NAMES,
    DatasetNode,
    FileTree,
    GroupNode,
    fixed_string,
    min_max,
    nest_list,
    numeric_name,
    numpy_dtype_name,
)

# HDF5 1.14 constants (checked against h5py's in tests/test_h5lean.py)
H5P_DEFAULT = 0
H5I_GROUP, H5I_DATASET = 2, 5
T_INTEGER, T_FLOAT, T_STRING, T_REFERENCE, T_VLEN = 0, 1, 3, 7, 9
ORDER_BE, SGN_NONE = 1, 0
STR_NULLTERM, STR_NULLPAD = 0, 1
S_SCALAR, S_SIMPLE, S_NULL = 0, 1, 2
L_HARD = 0
D_COMPACT, D_CONTIGUOUS, D_CHUNKED = 0, 1, 2
INDEX_NAME, INDEX_CRT_ORDER, ITER_INC = 0, 1, 0
CRT_ORDER_TRACKED = 1
NATIVE_INFO_ALL = 0x8 | 0x10  # H5O_NATIVE_INFO_HDR | H5O_NATIVE_INFO_META_SIZE
HADDR_UNDEF = (1 << 64) - 1
H5T_VARIABLE = ctypes.c_size_t(-1).value
#: attributes larger than this are left to h5py
MAX_ATTR_BYTES = 1 << 20
#: mirrors tree.MAX_ATTR_ELEMENTS and tree.SMALL_STRING
MAX_ATTR_ELEMENTS = 32
SMALL_STRING = 256

_HDF5_NAME = re.compile(r"libhdf5-[0-9a-f]+\.so(\.\d+)*$")


class _Bail(Exception):
    """Something the lean walk does not handle exactly: the caller uses h5py."""


hid = ctypes.c_int64
herr = ctypes.c_int
u64 = ctypes.c_uint64
P_u64 = ctypes.POINTER(u64)


class LinkInfo(ctypes.Structure):
    class _U(ctypes.Union):
        _fields_ = [("token", ctypes.c_uint8 * 16), ("val_size", ctypes.c_size_t)]

    _fields_ = [("type", ctypes.c_int), ("corder_valid", ctypes.c_bool),
                ("corder", ctypes.c_int64), ("cset", ctypes.c_int), ("u", _U)]


class ObjInfo(ctypes.Structure):
    _fields_ = [("fileno", ctypes.c_ulong), ("token", ctypes.c_uint8 * 16),
                ("type", ctypes.c_int), ("rc", ctypes.c_uint),
                ("atime", ctypes.c_long), ("mtime", ctypes.c_long), ("ctime", ctypes.c_long),
                ("btime", ctypes.c_long), ("num_attrs", u64)]


class VarLen(ctypes.Structure):  # hvl_t
    _fields_ = [("len", ctypes.c_size_t), ("p", ctypes.c_void_p)]


VISIT_CB = ctypes.CFUNCTYPE(ctypes.c_int, hid, ctypes.c_char_p, ctypes.POINTER(LinkInfo),
                            ctypes.c_void_p)

#: name: (restype, argtypes)
_SIGNATURES = {
    "H5open": (herr, []),
    "H5get_libversion": (herr, [ctypes.POINTER(ctypes.c_uint)] * 3),
    "H5Eset_auto2": (herr, [hid, ctypes.c_void_p, ctypes.c_void_p]),
    "H5Pcreate": (hid, [hid]),
    "H5Pclose": (herr, [hid]),
    "H5Pset_fapl_core": (herr, [hid, ctypes.c_size_t, ctypes.c_bool]),
    "H5Pget_userblock": (herr, [hid, P_u64]),
    "H5Pget_layout": (ctypes.c_int, [hid]),
    "H5Pget_chunk": (ctypes.c_int, [hid, ctypes.c_int, P_u64]),
    "H5Pget_nfilters": (ctypes.c_int, [hid]),
    "H5Pget_filter2": (ctypes.c_int, [hid, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                      ctypes.POINTER(ctypes.c_size_t),
                                      ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t,
                                      ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint)]),
    "H5Pget_external_count": (ctypes.c_int, [hid]),
    "H5Pget_attr_creation_order": (herr, [hid, ctypes.POINTER(ctypes.c_uint)]),
    "H5Fopen": (hid, [ctypes.c_char_p, ctypes.c_uint, hid]),
    "H5Fclose": (herr, [hid]),
    "H5Fget_create_plist": (hid, [hid]),
    "H5Lvisit2": (herr, [hid, ctypes.c_int, ctypes.c_int, VISIT_CB, ctypes.c_void_p]),
    "H5Oopen": (hid, [hid, ctypes.c_char_p, hid]),
    "H5Oclose": (herr, [hid]),
    "H5Oget_info3": (herr, [hid, ctypes.POINTER(ObjInfo), ctypes.c_uint]),
    "H5Oget_native_info": (herr, [hid, ctypes.c_void_p, ctypes.c_uint]),
    "H5Oget_comment": (ctypes.c_ssize_t, [hid, ctypes.c_char_p, ctypes.c_size_t]),
    "H5Iget_type": (ctypes.c_int, [hid]),
    "H5Aget_num_attrs": (ctypes.c_int, [hid]),
    "H5Aopen_by_idx": (hid, [hid, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, u64, hid,
                             hid]),
    "H5Aget_name": (ctypes.c_ssize_t, [hid, ctypes.c_size_t, ctypes.c_char_p]),
    "H5Aget_space": (hid, [hid]),
    "H5Aget_type": (hid, [hid]),
    "H5Aread": (herr, [hid, hid, ctypes.c_void_p]),
    "H5Aclose": (herr, [hid]),
    "H5Dget_space": (hid, [hid]),
    "H5Dget_type": (hid, [hid]),
    "H5Dget_offset": (u64, [hid]),
    "H5Dget_storage_size": (u64, [hid]),
    "H5Dget_create_plist": (hid, [hid]),
    "H5Dread": (herr, [hid, hid, hid, hid, hid, ctypes.c_void_p]),
    "H5Gget_create_plist": (hid, [hid]),
    "H5Sget_simple_extent_type": (ctypes.c_int, [hid]),
    "H5Sget_simple_extent_dims": (ctypes.c_int, [hid, P_u64, P_u64]),
    "H5Sclose": (herr, [hid]),
    "H5Tget_class": (ctypes.c_int, [hid]),
    "H5Tget_size": (ctypes.c_size_t, [hid]),
    "H5Tget_order": (ctypes.c_int, [hid]),
    "H5Tget_sign": (ctypes.c_int, [hid]),
    "H5Tget_strpad": (ctypes.c_int, [hid]),
    "H5Tget_cset": (ctypes.c_int, [hid]),
    "H5Tis_variable_str": (ctypes.c_int, [hid]),
    "H5Tcopy": (hid, [hid]),
    "H5Tset_size": (herr, [hid, ctypes.c_size_t]),
    "H5Tset_cset": (herr, [hid, ctypes.c_int]),
    "H5Tclose": (herr, [hid]),
    "H5Tget_super": (hid, [hid]),
    "H5Tvlen_create": (hid, [hid]),
    "H5Treclaim": (herr, [hid, hid, hid, ctypes.c_void_p]),
}
_GLOBALS = ("H5P_CLS_FILE_ACCESS_ID_g", "H5T_C_S1_g", "H5T_NATIVE_DOUBLE_g",
            "H5T_NATIVE_LLONG_g", "H5T_NATIVE_ULLONG_g")

_lib = None
_searched = False


def library_path() -> str | None:
    """The HDF5 library file the installed h5py wheel bundles (found without importing
    h5py), or None (h5py built against a system HDF5, not Linux, not installed)."""
    import importlib.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        spec = importlib.util.find_spec("h5py")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    libdir = os.path.join(os.path.dirname(list(spec.submodule_search_locations)[0]),
                          "h5py.libs")
    try:
        found = [n for n in os.listdir(libdir) if _HDF5_NAME.match(n)]
    except OSError:
        return None
    return os.path.join(libdir, found[0]) if len(found) == 1 else None


def _dlopen(path: str):
    """Load ``path``; the other libraries of its folder (its dependencies, which auditwheel
    renamed and which have no RPATH) first, in whatever order they load."""
    libdir = os.path.dirname(path)
    rest = [os.path.join(libdir, n) for n in sorted(os.listdir(libdir))
            if n.endswith(tuple(".so" + s for s in ("", ".0", ".1", ".2", ".3")))
            or ".so." in n]
    rest = [p for p in rest if p != path and "hdf5_hl" not in p]
    for _ in range(len(rest) + 1):
        try:
            return ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        except OSError:
            left = []
            for p in rest:
                try:
                    ctypes.CDLL(p, mode=os.RTLD_LOCAL)
                except OSError:
                    left.append(p)
            if len(left) == len(rest):
                return None
            rest = left
    return None


class _Lib:
    def __init__(self, cdll):
        for name, (res, args) in _SIGNATURES.items():
            f = getattr(cdll, name)
            f.restype, f.argtypes = res, args
            setattr(self, name[2:], f)
        if self.open() < 0:
            raise OSError("H5open failed")
        for name in _GLOBALS:
            setattr(self, name[:-2], hid.in_dll(cdll, name).value)
        maj, mnr, rel = (ctypes.c_uint() for _ in range(3))
        self.get_libversion(ctypes.byref(maj), ctypes.byref(mnr), ctypes.byref(rel))
        if (maj.value, mnr.value) < (1, 14):
            raise OSError("HDF5 older than 1.14")
        self.Eset_auto2(0, None, None)  # HDF5's errors surface as failed calls, not stderr
        # HDF5 caps ranks at 32 (H5S_MAX_RANK); the buffer holds 64 all the same
        self.dims = (u64 * 64)()


def library() -> _Lib | None:
    """The ctypes handle, or None when the lean walk cannot run in this process: h5py is
    imported (it owns the library and its lock), or another Python thread runs (h5py's
    wheels build HDF5 without thread safety: no thread may call it, or import h5py and
    call it, while this walk does; the command line's walk runs in a single-threaded child
    process)."""
    global _lib, _searched
    if ("h5py" in sys.modules or os.environ.get("WTRANSPLANT_NO_FASTH5")
            or threading.active_count() != 1):
        return None
    if not _searched:
        _searched = True
        path = library_path()
        cdll = _dlopen(path) if path else None
        try:
            _lib = _Lib(cdll) if cdll is not None else None
        except (OSError, AttributeError, ValueError):
            _lib = None
    return _lib


# --------------------------------------------------------------------------------------
# the walk


def walk_lean(path: str, display: str, *, file_size: int, head: bytes,
              in_memory: bool) -> FileTree | None:
    """The file's :class:`FileTree`, or None where h5py must walk it (see the module
    docstring). ``head``: the file's first bytes (the userblock is cut from them);
    ``in_memory``: read the file into memory first (HDF5's core driver)."""
    L = library()
    if L is None:
        return None
    fapl = L.Pcreate(L.H5P_CLS_FILE_ACCESS_ID)
    if fapl < 0:
        return None
    try:
        if in_memory and L.Pset_fapl_core(fapl, 1 << 16, False) < 0:
            return None
        fid = L.Fopen(os.fsencode(path), 0, fapl)  # H5F_ACC_RDONLY
    finally:
        L.Pclose(fapl)
    if fid < 0:
        return None
    try:
        groups, datasets, comment, userblock = _Walk(L, fid).run(head)
    except (_Bail, UnicodeDecodeError, OverflowError, ValueError):
        return None
    finally:
        L.Fclose(fid)
    return FileTree(path=path, display=display, file_size=file_size, groups=groups,
                    datasets=datasets, links={}, userblock=userblock, comment=comment)


def _bail(why: str = ""):
    raise _Bail(why)


class _Walk:
    def __init__(self, lib: _Lib, fid: int):
        self.L, self.fid = lib, fid
        self.dims = lib.dims

    def run(self, head: bytes):
        L = self.L
        groups: dict[str, GroupNode] = {}
        datasets: dict[str, DatasetNode] = {}
        seen: dict[bytes, str] = {}
        root = L.Oopen(self.fid, b"/", H5P_DEFAULT)
        if root < 0:
            _bail("root")
        try:
            groups["/"] = GroupNode("/", attrs=self.attrs(root, H5I_GROUP))
            info = ObjInfo()
            if L.Oget_info3(root, ctypes.byref(info), 1) < 0:  # H5O_INFO_BASIC
                _bail("root info")
            seen[bytes(info.token)] = "/"
            # h5py's walk asks for the root's old-style info, which also sizes its header
            # and attribute storage: where that fails, h5py reports the damage
            native = (ctypes.c_uint8 * 256)()
            if L.Oget_native_info(root, native, NATIVE_INFO_ALL) < 0:
                _bail("root native info")
            comment = self.comment(root)
        finally:
            L.Oclose(root)
        for bname, token in self.links():
            path = "/" + bname.decode("utf-8", "replace")
            parent_path, _, base = path.rpartition("/")
            parent = groups.get(parent_path or "/")
            if parent is not None:
                parent.children.append(base)
            alias = seen.get(token)
            if alias is None:
                seen[token] = path
            self.add(bname, path, alias, groups, datasets)
        return groups, datasets, comment, self.userblock(head)

    def links(self) -> list[tuple[bytes, bytes]]:
        """(name, object token) of every link, in h5py's visit order; hard links only."""
        out: list[tuple[bytes, bytes]] = []

        def cb(_gid, name, info, _data):
            i = info.contents
            if i.type != L_HARD:
                return 1  # stops the visit: h5py records soft/external links
            out.append((name, bytes(i.u.token)))
            return 0

        if self.L.Lvisit2(self.fid, INDEX_NAME, ITER_INC, VISIT_CB(cb), None) != 0:
            _bail("links")
        return out

    def add(self, bname: bytes, path: str, alias, groups, datasets) -> None:
        L = self.L
        oid = L.Oopen(self.fid, bname, H5P_DEFAULT)
        if oid < 0:
            _bail("open")
        try:
            t = L.Iget_type(oid)
            if t == H5I_GROUP:
                groups[path] = GroupNode(path, attrs=self.attrs(oid, t) if alias is None
                                         else {}, alias_of=alias)
            elif t == H5I_DATASET:
                datasets[path] = self.dataset(oid, path, alias)
            else:  # a committed datatype
                _bail("datatype")
        finally:
            L.Oclose(oid)

    def extent(self, sid: int) -> tuple[int, tuple]:
        """(dataspace class, shape) of a dataspace id, which it closes."""
        L = self.L
        try:
            cls = L.Sget_simple_extent_type(sid)
            rank = L.Sget_simple_extent_dims(sid, self.dims, None)
            if cls < 0 or rank < 0 or rank > 32:
                _bail("extent")
            return cls, tuple(self.dims[:rank])
        finally:
            L.Sclose(sid)

    def dataset(self, oid: int, path: str, alias) -> DatasetNode:
        L = self.L
        sid = L.Dget_space(oid)
        if sid < 0:
            _bail("space")
        space, shape = self.extent(sid)
        tid = L.Dget_type(oid)
        if tid < 0:
            _bail("type")
        try:
            dtype, kind, itemsize = self.describe(tid)
            n = 1
            for s in shape:
                n *= s
            node = DatasetNode(path=path, shape=shape, dtype=dtype, kind=kind,
                               nbytes=n * itemsize,
                               attrs=self.attrs(oid, H5I_DATASET) if alias is None else {},
                               alias_of=alias)
            if L.Dget_offset(oid) == HADDR_UNDEF:
                self.layout(node, oid)
            node.storage = int(L.Dget_storage_size(oid))
            if kind == "string" and space == S_SCALAR and itemsize <= SMALL_STRING:
                node.value = self.small_string(oid, tid)  # (h5py reads None off a null one)
            return node
        finally:
            L.Tclose(tid)

    def describe(self, tid: int) -> tuple[str, str, int]:
        """(dtype string, kind, size) as tree.describe_type gives them, for the classes
        handled here."""
        L = self.L
        cls, size = L.Tget_class(tid), L.Tget_size(tid)
        if cls == T_FLOAT:
            return (*numeric_name(True, size, L.Tget_order(tid) == ORDER_BE, True), size)
        if cls == T_INTEGER:
            return (*numeric_name(False, size, L.Tget_order(tid) == ORDER_BE,
                                  L.Tget_sign(tid) != SGN_NONE), size)
        if cls == T_STRING:
            return ("str" if L.Tis_variable_str(tid) > 0 else f"S{size}", "string", size)
        if cls == T_REFERENCE:  # MATLAB's cell arrays
            return ("reference", "reference", size)
        _bail("class")

    def layout(self, node: DatasetNode, oid: int) -> None:
        L = self.L
        dcpl = L.Dget_create_plist(oid)
        if dcpl < 0:
            _bail("dcpl")
        try:
            lay = L.Pget_layout(dcpl)
            if lay not in (D_COMPACT, D_CONTIGUOUS, D_CHUNKED) or L.Pget_external_count(
                    dcpl) != 0:
                _bail("layout")  # virtual datasets and external storage: h5py's walk
            node.layout = LAYOUT_NAMES[lay]
            if lay == D_CHUNKED:
                rank = L.Pget_chunk(dcpl, 32, self.dims)
                if rank < 0:
                    _bail("chunk")
                node.chunks = tuple(self.dims[:rank])
                node.filters = [self.filter(dcpl, i) for i in range(L.Pget_nfilters(dcpl))]
        finally:
            L.Pclose(dcpl)

    def filter(self, dcpl: int, i: int) -> str:
        flags, nvals, config = ctypes.c_uint(), ctypes.c_size_t(8), ctypes.c_uint()
        vals, name = (ctypes.c_uint * 8)(), ctypes.create_string_buffer(257)
        code = self.L.Pget_filter2(dcpl, i, ctypes.byref(flags), ctypes.byref(nvals), vals,
                                   256, name, ctypes.byref(config))
        if code < 0:
            _bail("filter")
        if code == 1 and nvals.value:
            return f"gzip({vals[0]})"
        return FILTER_NAMES.get(code) or name.value.decode("latin-1", "replace") or str(code)

    def comment(self, oid: int) -> str | None:
        n = self.L.Oget_comment(oid, None, 0)
        if n <= 0 or n > 1 << 16:
            return None
        buf = ctypes.create_string_buffer(n + 1)
        self.L.Oget_comment(oid, buf, n + 1)
        return buf.value.decode("utf-8", "replace")

    def userblock(self, head: bytes) -> bytes:
        L = self.L
        fcpl = L.Fget_create_plist(self.fid)
        if fcpl < 0:
            _bail("fcpl")
        ub = u64()
        try:
            if L.Pget_userblock(fcpl, ctypes.byref(ub)) < 0:
                _bail("userblock")
        finally:
            L.Pclose(fcpl)
        return head[: min(ub.value, 128)] if ub.value else b""

    # ----------------------------------------------------------------------------------
    # attributes, decoded as walk_h5py.decode_value decodes what h5py returns

    def attrs(self, oid: int, itype: int) -> dict:
        L = self.L
        n = L.Aget_num_attrs(oid)
        if n < 0:
            _bail("nattrs")
        if n == 0:
            return {}
        cpl = (L.Gget_create_plist if itype == H5I_GROUP else L.Dget_create_plist)(oid)
        if cpl < 0:
            _bail("ocpl")
        flags = ctypes.c_uint()
        try:
            if L.Pget_attr_creation_order(cpl, ctypes.byref(flags)) < 0:
                _bail("crt order")
        finally:
            L.Pclose(cpl)
        index = INDEX_CRT_ORDER if flags.value & CRT_ORDER_TRACKED else INDEX_NAME
        out = {}
        for i in range(n):
            aid = L.Aopen_by_idx(oid, b".", index, ITER_INC, i, H5P_DEFAULT, H5P_DEFAULT)
            if aid < 0:
                _bail("attr")
            try:
                out[self.attr_name(aid)] = self.attr_value(aid)
            finally:
                L.Aclose(aid)
        return out

    def attr_name(self, aid: int) -> str:
        n = self.L.Aget_name(aid, 0, None)
        if n < 0 or n > 1 << 16:
            _bail("attr name")
        buf = ctypes.create_string_buffer(n + 1)
        self.L.Aget_name(aid, n + 1, buf)
        return buf.raw[:n].decode("utf-8")

    def attr_value(self, aid: int):
        L = self.L
        sid = L.Aget_space(aid)
        if sid < 0:
            _bail("attr space")
        try:
            cls, shape = self.extent(L.Aget_space(aid))
            if cls == S_NULL:
                return None  # h5py.Empty
            tid = L.Aget_type(aid)
            if tid < 0:
                _bail("attr type")
            try:
                return self.attr_data(aid, sid, tid, shape)
            finally:
                L.Tclose(tid)
        finally:
            L.Sclose(sid)

    def attr_data(self, aid: int, sid: int, tid: int, shape: tuple):
        L = self.L
        n = 1
        for s in shape:
            n *= s
        cls, size = L.Tget_class(tid), L.Tget_size(tid)
        if n * max(size, 8) > MAX_ATTR_BYTES:
            _bail("attr size")
        if cls == T_STRING:
            texts = self.strings(aid, sid, tid, n, size)
            return texts[0] if not shape else texts  # arrays of strings: one flat list
        if cls == T_VLEN:
            return self.char_arrays(aid, sid, tid, n, scalar=not shape)
        if cls not in (T_FLOAT, T_INTEGER) or size > 8 or (cls == T_FLOAT and size == 1):
            _bail("attr class")
        values, dtname = self.numbers(aid, tid, cls, size, n)
        if not shape:
            return values[0]
        if n > MAX_ATTR_ELEMENTS:
            lo, hi = min_max(values)
            return f"<{dtname} array, shape {shape}, min {lo:.6g}, max {hi:.6g}>"
        return nest_list(values, shape)

    def numbers(self, aid: int, tid: int, cls: int, size: int, n: int):
        """The values as Python floats/ints (exact: HDF5 converts to double, int64 or
        uint64) and NumPy's name of the stored dtype."""
        L = self.L
        if cls == T_FLOAT:
            mem, ctype, kind = L.H5T_NATIVE_DOUBLE, ctypes.c_double, "f"
        elif L.Tget_sign(tid) != SGN_NONE:
            mem, ctype, kind = L.H5T_NATIVE_LLONG, ctypes.c_int64, "i"
        else:
            mem, ctype, kind = L.H5T_NATIVE_ULLONG, ctypes.c_uint64, "u"
        buf = (ctype * max(n, 1))()
        if n and L.Aread(aid, mem, buf) < 0:
            _bail("attr read")
        return list(buf[:n]), numpy_dtype_name(kind, size, L.Tget_order(tid) == ORDER_BE)

    def strings(self, aid: int, sid: int, tid: int, n: int, size: int) -> list[str]:
        L = self.L
        if L.Tget_cset(tid) not in (0, 1):
            _bail("character set")  # neither ASCII nor UTF-8: h5py refuses to decode it
        if L.Tis_variable_str(tid) > 0:
            mem = L.Tcopy(L.H5T_C_S1)
            if mem < 0:
                _bail("vlen type")
            try:
                L.Tset_size(mem, H5T_VARIABLE)
                L.Tset_cset(mem, L.Tget_cset(tid))
                buf = (ctypes.c_char_p * max(n, 1))()
                if n and L.Aread(aid, mem, buf) < 0:
                    _bail("vlen read")
                try:
                    raw = list(buf[:n])
                finally:
                    if n:
                        L.Treclaim(mem, sid, H5P_DEFAULT, buf)
            finally:
                L.Tclose(mem)
            if any(b is None for b in raw):
                _bail("null vlen string")
            return [b.decode("utf-8", "surrogateescape") for b in raw]
        pad = L.Tget_strpad(tid)
        if pad not in (STR_NULLTERM, STR_NULLPAD) or size == 0:
            _bail("padding")
        buf = ctypes.create_string_buffer(n * size or 1)
        if n and L.Aread(aid, tid, buf) < 0:
            _bail("string read")
        raw = buf.raw
        return [fixed_string(raw[i * size:(i + 1) * size], pad) for i in range(n)]

    def char_arrays(self, aid: int, sid: int, tid: int, n: int, *, scalar: bool):
        """Variable-length arrays of 1-byte strings (MATLAB_fields: one field name each),
        as decode_value decodes h5py's arrays of 'S1' arrays: one string per element, or,
        for a scalar, the list of its characters."""
        L = self.L
        base = L.Tget_super(tid)
        if base < 0:
            _bail("vlen base")
        try:
            if (L.Tget_class(base) != T_STRING or L.Tget_size(base) != 1
                    or L.Tis_variable_str(base) > 0):
                _bail("vlen of what")
            mem = L.Tvlen_create(base)
        finally:
            L.Tclose(base)
        if mem < 0:
            _bail("vlen type")
        try:
            buf = (VarLen * max(n, 1))()
            if n and L.Aread(aid, mem, buf) < 0:
                _bail("vlen read")
            try:
                if sum(v.len for v in buf[:n]) > MAX_ATTR_BYTES:
                    _bail("vlen size")
                if any(not v.len or not v.p for v in buf[:n]):
                    _bail("empty vlen")  # h5py cannot read it: its walk shows why
                raw = [ctypes.string_at(v.p, v.len) if v.len else b"" for v in buf[:n]]
            finally:
                if n:
                    L.Treclaim(mem, sid, H5P_DEFAULT, buf)
        finally:
            L.Tclose(mem)
        if scalar:
            return [bytes([c]).rstrip(b"\x00").decode("utf-8", "replace") for c in raw[0]]
        return [r.replace(b"\x00", b"").decode("utf-8", "replace") for r in raw]

    def small_string(self, oid: int, tid: int) -> str | None:
        """A scalar string dataset's value, as tree._read_small_string reads it."""
        L = self.L
        if L.Tis_variable_str(tid) > 0:
            sid = L.Dget_space(oid)
            if sid < 0:
                _bail("space")
            mem = L.Tcopy(L.H5T_C_S1)
            try:
                L.Tset_size(mem, H5T_VARIABLE)
                L.Tset_cset(mem, L.Tget_cset(tid))
                buf = (ctypes.c_char_p * 1)()
                if L.Dread(oid, mem, 0, 0, H5P_DEFAULT, buf) < 0:
                    _bail("vlen read")
                raw = buf[0]
                L.Treclaim(mem, sid, H5P_DEFAULT, buf)
            finally:
                L.Tclose(mem)
                L.Sclose(sid)
            if raw is None:
                _bail("null vlen string")
            return raw.decode("utf-8", "replace")
        size, pad = L.Tget_size(tid), L.Tget_strpad(tid)
        if pad not in (STR_NULLTERM, STR_NULLPAD) or size == 0:
            _bail("padding")
        buf = ctypes.create_string_buffer(size)
        if L.Dread(oid, tid, 0, 0, H5P_DEFAULT, buf) < 0:
            _bail("string read")
        return fixed_string(buf.raw, pad, decode="replace")
