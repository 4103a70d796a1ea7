"""HDF5 metadata read straight from the file's bytes, for the classic format most weight
files use, in pure Python.

HDF5's library needs about 16 µs to open and close one dataset (1.14, through h5py's
wheel), so a 20,000-dataset file costs ``inspect`` a third of a second before it
has described anything, and more than ``h5ls -r`` takes for the whole listing.
This module reads the metadata itself: a superblock of version 0 or 1,
version-1 object headers, groups held in symbol tables (v1 B-trees and local
heaps), and global heaps for variable-length strings. That is the layout
h5py, Keras 2, MATLAB v7.3 and Octave write by default. From it,
:func:`walk_parsed` builds the :class:`~wtransplant.reading.tree.FileTree` that
:mod:`.h5lean` builds through the library. It walks in the same order and decodes
attribute values the same way. Tests compare the trees on every fixture, and a
differential fuzz campaign compares them on mutated and generated files.

Like :mod:`.h5lean`, it is a fast path with a strict scope, never a second opinion.
Anything it does not read exactly makes it return None, and the caller tries the
library. That covers newer object headers, new-style or creation-ordered groups, soft
links, shared or dense attributes, virtual or external storage, other datatype classes,
non-IEEE floats, null variable-length strings, and any structure out of bounds,
inconsistent or unsorted. It reads only: the file is opened read-only and never mapped.
It allocates nothing larger than the file or :data:`MAX_ATTR_BYTES`, and it bounds every
loop by the file's size. Being pure Python, it needs neither h5py nor the library, and
it is safe beside other threads.
"""

from __future__ import annotations

import os
import struct

from wtransplant.reading.tree import (
    FILTER_NAMES,
    MAX_ATTR_ELEMENTS,
    SMALL_STRING,
    DatasetNode,
    FileTree,
    GroupNode,
    fixed_string,
    gc_paused,
    min_max,
    nest_list,
    numeric_name,
    numpy_dtype_name,
)

SIGNATURE = b"\x89HDF\r\n\x1a\n"
UNDEF = (1 << 64) - 1
#: files up to this size are read into memory at once; larger ones piece by piece
WHOLE_FILE = 64 << 20
#: no single structure read is larger (a header or heap claiming more: the library decides)
MAX_READ = 16 << 20
#: attributes larger than this are left to the library (as h5lean.MAX_ATTR_BYTES)
MAX_ATTR_BYTES = 1 << 20
MAX_RANK = 32

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_OH_PREFIX = struct.Struct("<BBHII")  # version, reserved, messages, refcount, size
_MSG = struct.Struct("<HHB")  # type, size, flags (then 3 reserved bytes)
_TWO_ADDR = struct.Struct("<QQ")
_ENTRY = struct.Struct("<QQI")  # name offset, object header, cache type
_ENTRY40 = struct.Struct("<QQI20x")  # the same, a whole symbol table entry
_BTREE = struct.Struct("<4sBBH")  # TREE, node type, level, entries used
_HEAP = struct.Struct("<4sB3xQQQ")  # HEAP, version, data size, free list, data address
_GCOL_OBJ = struct.Struct("<HH4xQ")  # index, refcount, size
_DTYPE = struct.Struct("<BBBBI")  # class+version, 3 bit-field bytes, size
_VLEN_ID = struct.Struct("<IQI")  # length, heap collection, object index

# object header message types
M_NIL, M_SPACE, M_DTYPE, M_FILL_OLD, M_FILL = 0x00, 0x01, 0x03, 0x04, 0x05
M_LAYOUT, M_FILTERS, M_ATTR, M_COMMENT = 0x08, 0x0B, 0x0C, 0x0D
M_MTIME_OLD, M_CONT, M_STAB, M_MTIME = 0x0E, 0x10, 0x11, 0x12
REFCOUNT = -1  # (the object header's reference count, kept with its messages)
#: messages read (or, for fill values and times, only bounds-checked); any other type
#: (links, attribute info, external files, shared tables...) leaves the file to the library
KNOWN = frozenset({M_NIL, M_SPACE, M_DTYPE, M_FILL_OLD, M_FILL, M_LAYOUT, M_FILTERS,
                   M_ATTR, M_COMMENT, M_MTIME_OLD, M_CONT, M_STAB, M_MTIME})

#: IEEE layouts (size: precision, exponent location, size, mantissa location, size, bias,
#: sign bit) that convert to a double exactly as struct unpacks them
_IEEE = {2: (16, 10, 5, 0, 10, 15, 15), 4: (32, 23, 8, 0, 23, 127, 31),
         8: (64, 52, 11, 0, 52, 1023, 63)}
_FLOAT_CODE = {2: "e", 4: "f", 8: "d"}
_INT_CODE = {1: "b", 2: "h", 4: "i", 8: "q"}


class _Bail(Exception):
    """Something read here does not cover exactly: the caller uses the library."""


def _bail(why: str = ""):
    raise _Bail(why)


def walk_parsed(path: str, display: str, *, file_size: int) -> FileTree | None:
    """The file's :class:`FileTree` as the h5py walk gives it, or None where the library
    must walk it (see the module docstring)."""
    try:
        with open(path, "rb") as fh, gc_paused():
            data = _Data(fh, file_size)
            groups, datasets, comment, userblock = _Walk(data).run()
    except (_Bail, struct.error, IndexError, KeyError, UnicodeDecodeError, OSError,
            ValueError, RecursionError, MemoryError):
        return None
    return FileTree(path=path, display=display, file_size=file_size, groups=groups,
                    datasets=datasets, links={}, userblock=userblock, comment=comment)


class _Data:
    """The file's bytes: ``at(addr, n)`` gives (buffer, offset) with ``n`` bytes at
    relative address ``addr`` (the whole file held for small files, else read on demand).
    Every read is checked against the end of the file (and, once known, HDF5's end of
    address space)."""

    def __init__(self, fh, size: int):
        self.fh, self.size, self.base, self.eoa = fh, size, 0, size
        self.whole = fh.read() if size <= WHOLE_FILE else None
        if self.whole is not None and len(self.whole) != size:
            _bail("size changed")

    def at(self, addr: int, n: int):
        a = self.base + addr
        if addr < 0 or not 0 <= n <= MAX_READ or addr + n > self.eoa:
            _bail("out of bounds")
        if self.whole is not None:
            return self.whole, a
        b = os.pread(self.fh.fileno(), n, a)
        if len(b) != n:
            _bail("short read")
        return b, 0

    def inside(self, addr: int, n: int) -> None:
        """Check that raw data lies inside the file (without reading it)."""
        if addr < 0 or n < 0 or addr + n > self.eoa:
            _bail("data out of bounds")

    def head(self, n: int) -> bytes:
        if self.whole is not None:
            return self.whole[:n]
        return os.pread(self.fh.fileno(), n, 0)


class _Walk:
    def __init__(self, data: _Data):
        self.d = data
        self.heaps: dict[int, dict] = {}  # global heap collections read so far
        self.owner: dict[int, int] = {}  # header chunk address: its object header
        self.spaces: dict[bytes, tuple] = {}  # decoded dataspace and datatype messages
        self.types: dict[bytes, tuple] = {}
        self.fills: set[tuple] = set()  # fill value messages checked
        self.budget = data.size // 8 + 1024  # structures read: bounds any loop

    def spend(self, n: int = 1) -> None:
        self.budget -= n
        if self.budget < 0:
            _bail("too many structures")

    # ----------------------------------------------------------------------------------
    # superblock, groups, visit order

    def superblock(self) -> tuple[int, int]:
        """(userblock size, root object header address)."""
        d = self.d
        pos = 0
        while pos + 96 <= d.size:
            buf, o = d.at(pos, 9)
            if buf[o:o + 8] == SIGNATURE:
                break
            pos = 512 if pos == 0 else pos * 2
        else:
            _bail("no superblock")
        version = buf[o + 8]
        buf, o = d.at(pos, 96 if version == 0 else 100)
        # free-space, root entry and shared-header versions 0, 8-byte offsets and lengths,
        # no consistency flags (anything else: the library decides)
        if version not in (0, 1) or bytes(buf[o + 9:o + 16]) != b"\0\0\0\0\x08\x08\0":
            _bail("superblock version or sizes")
        self.leaf_k, self.node_k, flags = struct.unpack_from("<HHI", buf, o + 16)
        # chunk B-trees' K: stored from version 1 on, else HDF5's default
        self.chunk_k = _U16.unpack_from(buf, o + 24)[0] if version == 1 else 32
        if not self.leaf_k or not self.node_k or not self.chunk_k or flags:
            _bail("superblock K or flags")
        p = o + (24 if version == 0 else 28)
        base, free, eof, driver = struct.unpack_from("<4Q", buf, p)
        # the stored end of file counts the userblock; addresses do not
        if base != pos or free != UNDEF or driver != UNDEF or not pos < eof <= d.size:
            _bail("base, free space, driver or end of file")
        d.base, d.eoa = pos, eof - pos
        _name, root, cache = _ENTRY.unpack_from(buf, p + 32)
        if cache not in (0, 1):
            _bail("root entry")
        return pos, root

    def run(self):
        ub, root = self.superblock()
        groups: dict[str, GroupNode] = {}
        datasets: dict[str, DatasetNode] = {}
        seen: dict[int, str] = {root: "/"}
        msgs = self.header(root)
        if _kind(msgs) != "group":
            _bail("root is not a group")
        groups["/"] = GroupNode("/", attrs=self.attrs(msgs))
        comment = self.comment(msgs)
        stack = [(root, "", self.entries(msgs))]
        while stack:  # depth first, each group's links in name order (H5Lvisit's order)
            gaddr, gpath, entries = stack[-1]
            if not entries:
                stack.pop()
                continue
            name, addr = entries.pop()
            self.spend()
            path = gpath + "/" + name
            groups[gpath or "/"].children.append(name)
            alias = seen.get(addr)
            if alias is None:
                seen[addr] = path
            msgs = self.header(addr)
            if alias is not None and msgs[REFCOUNT] < 2:
                _bail("second link to an object counted once")  # H5Lvisit would descend
            kind = _kind(msgs)
            if kind == "group":
                groups[path] = GroupNode(path, attrs=self.attrs(msgs) if alias is None
                                         else {}, alias_of=alias)
                if alias is None:
                    stack.append((addr, path, self.entries(msgs)))
            else:
                datasets[path] = self.dataset(msgs, path, alias)
        head = self.d.head(min(ub, 128)) if ub else b""
        return groups, datasets, comment, head

    def entries(self, msgs: dict) -> list[tuple[str, int]]:
        """A group's (name, object header address), last name first (popped in order)."""
        buf, o, _size = msgs[M_STAB]
        btree, heap = _TWO_ADDR.unpack_from(buf, o)
        names = self.local_heap(heap)
        out: list[tuple[bytes, int]] = []
        levels: dict[int, list] = {}
        self.btree_groups(btree, names, out, depth=0, seen=set(), levels=levels)
        _check_siblings(levels)
        for i in range(1, len(out)):
            if out[i][0] <= out[i - 1][0]:
                _bail("names not sorted")  # lookups by name would not find them
        return [(n.decode("utf-8", "replace"), a) for n, a in reversed(out)]

    def local_heap(self, addr: int):
        """A function giving the NUL-terminated name at an offset of the heap's data."""
        buf, o = self.d.at(addr, 32)
        sig, version, size, free, daddr = _HEAP.unpack_from(buf, o)
        if sig != b"HEAP" or version != 0 or size == 0:
            _bail("local heap")
        hb, ho = self.d.at(daddr, size)
        self.free_list(hb, ho, size, free)

        def name(off: int) -> bytes:
            if off >= size:
                _bail("name offset")
            end = hb.find(b"\x00", ho + off, ho + size)
            if end < 0:
                _bail("name not terminated")
            return hb[ho + off:end]

        return name

    def free_list(self, hb, ho: int, size: int, block: int) -> None:
        """Check a local heap's free list as the library does when it loads the heap."""
        for _ in range(size // 16 + 1):
            if block == 1:  # H5HL_FREE_NULL
                return
            if block + 16 > size:
                _bail("bad heap free list")
            nxt, bsize = _TWO_ADDR.unpack_from(hb, ho + block)
            if nxt == 0 or block + bsize > size:
                _bail("bad heap free list")
            block = nxt
        _bail("heap free list loops")

    def btree_node(self, addr: int, ntype: int, k2: int, depth: int, seen: set,
                   levels: dict, want: int | None) -> tuple[int, int]:
        """(level, entries used) of a v1 B-tree node of ``ntype`` (0 groups, 1 chunks),
        checked: no cycle, at most ``k2`` entries, none empty but a root leaf, one level
        below its parent; its (address, left, right) added to ``levels``."""
        if addr in seen or depth > 64:
            _bail("B-tree cycle")
        seen.add(addr)
        self.spend()
        buf, o = self.d.at(addr, 40)
        sig, nt, level, used = _BTREE.unpack_from(buf, o)
        if sig != b"TREE" or nt != ntype or used > k2 or ((depth or level) and not used) or (
                want is not None and level != want):
            _bail("B-tree node")
        levels.setdefault(level, []).append((addr, *_TWO_ADDR.unpack_from(buf, o + 8)))
        return level, used

    def btree_groups(self, addr: int, names, out: list, depth: int, seen: set,
                     levels: dict, want: int | None = None) -> None:
        """The (name, address) entries of a group's v1 B-tree, in order. ``levels``
        collects each level's nodes (address, left, right) for :func:`_check_siblings`."""
        k2 = 2 * self.node_k
        level, used = self.btree_node(addr, 0, k2, depth, seen, levels, want)
        self.d.inside(addr, 24 + 16 * k2 + 8)  # the library reads the whole node
        buf, o = self.d.at(addr + 24, 16 * used + 8)
        keys = [names(_U64.unpack_from(buf, o + 16 * i)[0]) for i in range(used + 1)]
        for i in range(used):
            child = _U64.unpack_from(buf, o + 16 * i + 8)[0]
            start = len(out)
            if level:
                self.btree_groups(child, names, out, depth + 1, seen, levels, level - 1)
            else:
                self.symbol_node(child, names, out)
            if len(out) == start or out[start][0] <= keys[i] or out[-1][0] > keys[i + 1]:
                _bail("B-tree keys")  # a lookup by name would take another branch

    def symbol_node(self, addr: int, names, out: list) -> None:
        buf, o = self.d.at(addr, 8)
        if buf[o:o + 4] != b"SNOD" or buf[o + 4] != 1:
            _bail("symbol node")
        n = _U16.unpack_from(buf, o + 6)[0]
        if n > 2 * self.leaf_k:
            _bail("symbol node size")
        self.d.inside(addr, 8 + 80 * self.leaf_k)  # the whole node
        self.spend(n)
        buf, o = self.d.at(addr + 8, 40 * n)
        for name_off, header, cache in _ENTRY40.iter_unpack(buf[o:o + 40 * n]):
            if cache > 1 or header == UNDEF:
                _bail("soft link")  # (cache type 2)
            name = names(name_off)
            if not name or name == b"." or b"/" in name:
                _bail("name")
            out.append((name, header))

    # ----------------------------------------------------------------------------------
    # object headers

    def header(self, addr: int) -> dict:
        """A version-1 object header's messages: {type: (buffer, offset, size)}, and the
        attribute messages as a list under M_ATTR."""
        at = self.d.at
        buf, o = at(addr, 16)
        version, _r, count, refcount, size = _OH_PREFIX.unpack_from(buf, o)
        if version != 1:
            _bail("object header version")
        msgs: dict = {REFCOUNT: refcount}
        attrs: list = []
        chunks = [(addr + 16, size)]
        seen = 0
        unpack, known, owner = _MSG.unpack_from, KNOWN, self.owner
        while chunks:
            caddr, csize = chunks.pop(0)
            if len(chunks) + seen > 64 or owner.setdefault(caddr, addr) != addr:
                _bail("continuations")  # (a chunk in two headers: the cache gives it to one)
            buf, o = at(caddr, csize)
            end = o + csize
            while o + 8 <= end:
                mtype, msize, flags = unpack(buf, o)
                o += 8
                seen += 1
                if o + msize > end or msize & 7 or mtype not in known or flags & ~1:
                    _bail("message")  # flags other than "constant", unknown, out of bounds
                if mtype == M_ATTR:
                    attrs.append((buf, o, msize))
                elif mtype == M_CONT:
                    if msize < 16:
                        _bail("continuation")
                    chunks.append(_TWO_ADDR.unpack_from(buf, o))
                elif mtype:
                    if mtype in msgs:
                        _bail("repeated message")
                    msgs[mtype] = (buf, o, msize)
                o += msize
            if o != end:
                _bail("header gap")
        if seen != count:
            _bail("message count")
        if attrs:
            msgs[M_ATTR] = attrs
        return msgs

    def comment(self, msgs: dict) -> str | None:
        if M_COMMENT not in msgs:
            return None
        buf, o, size = msgs[M_COMMENT]
        raw = bytes(buf[o:o + size - 1]).split(b"\x00", 1)[0]  # (the library's bound)
        return raw.decode("utf-8", "replace") if 0 < len(raw) <= 1 << 16 else None

    # ----------------------------------------------------------------------------------
    # datasets

    def dataset(self, msgs: dict, path: str, alias) -> DatasetNode:
        buf, o, size = msgs[M_SPACE]
        key = buf[o:o + size]  # most datasets share their space's and type's messages
        space = self.spaces.get(key)
        if space is None:
            space = self.spaces[key] = _dataspace(buf, o, size)
        space, shape, maxdims = space
        buf, o, size = msgs[M_DTYPE]
        key = buf[o:o + size]
        described = self.types.get(key)
        if described is None:
            ft = _datatype(buf, o, size)
            described = self.types[key] = (ft, *_describe(ft))
        ftype, dtype, kind, itemsize = described
        n = 1
        for s in shape:
            n *= s
        for mtype in (M_FILL, M_FILL_OLD):  # (most datasets share theirs)
            if mtype in msgs:
                buf, o, size = msgs[mtype]
                key = (mtype, buf[o:o + size])
                if key not in self.fills:
                    _fill(mtype, buf, o, size)
                    self.fills.add(key)
        node = DatasetNode(path=path, shape=shape, dtype=dtype, kind=kind,
                           nbytes=n * itemsize,
                           attrs=self.attrs(msgs) if alias is None else {},
                           alias_of=alias)
        stored = 0 if space == 2 else n * ftype["size"]  # a null space holds nothing
        raw = self.layout(node, msgs, stored, len(shape), maxdims, shape)
        if kind == "string" and space == 0 and itemsize <= SMALL_STRING:
            node.value = self.small_string(ftype, raw)
        return node

    def layout(self, node: DatasetNode, msgs: dict, nbytes: int, rank: int, maxdims,
               shape) -> tuple | None:
        """Fills layout, chunks, filters and storage as the library reports them; returns
        where a contiguous or compact dataset's bytes are ((buffer, offset) or None)."""
        buf, o, size = msgs[M_LAYOUT]
        if buf[o] != 3 or size < 4:
            _bail("layout version")
        cls = buf[o + 1]
        if M_FILTERS in msgs and cls != 2:
            _bail("filters without chunks")
        unlimited = maxdims is not None and maxdims != shape
        if cls == 1:  # contiguous
            addr, stored = _TWO_ADDR.unpack_from(buf, o + 2)
            if stored != nbytes or unlimited:
                _bail("contiguous size")
            if addr == UNDEF:
                node.layout = "contiguous"
                return None
            if addr == 0:
                _bail("data at address 0")  # h5py's get_offset takes 0 for an error
            self.d.inside(addr, stored)
            node.storage = stored
            return (addr, stored)
        if cls == 0:  # compact
            stored = _U16.unpack_from(buf, o + 2)[0]
            if stored != nbytes or o + 4 + stored > o + size or unlimited:
                _bail("compact size")
            node.layout, node.storage = "compact", stored
            return (buf, o + 4)
        if cls != 2:
            _bail("layout class")
        ndims = buf[o + 2]
        btree = _U64.unpack_from(buf, o + 3)[0]
        if ndims != rank + 1 or o + 11 + 4 * ndims > o + size:
            _bail("chunk rank")
        dims = struct.unpack_from(f"<{ndims}I", buf, o + 11)
        if 0 in dims:
            _bail("chunk dims")
        node.layout, node.chunks = "chunked", tuple(dims[:-1])
        node.filters = _filters(msgs)
        if btree == UNDEF:
            node.storage = 0
        else:
            levels: dict[int, list] = {}
            node.storage = self.chunk_bytes(btree, dims, 0, set(), levels)
            _check_siblings(levels)
        return None

    def chunk_bytes(self, addr: int, dims: tuple, depth: int, seen: set, levels: dict,
                    want: int | None = None) -> int:
        """Sum of the stored chunk sizes in a v1 chunk B-tree, whose nodes and keys are
        checked as the library decodes them (it reports 0 bytes where a key is bad:
        here, None)."""
        ndims, k2 = len(dims), 2 * self.chunk_k
        key = 8 + 8 * ndims
        level, used = self.btree_node(addr, 1, k2, depth, seen, levels, want)
        self.d.inside(addr, 24 + (key + 8) * k2 + key)  # the library reads the whole node
        buf, o = self.d.at(addr + 24, (key + 8) * used + key)
        offsets = struct.Struct(f"<{ndims}Q")
        for i in range(used + 1):
            if any(x % d for x, d in zip(offsets.unpack_from(buf, o + (key + 8) * i + 8),
                                         dims)):
                _bail("chunk key offset")
        total = 0
        for i in range(used):
            p = o + (key + 8) * i
            child = _U64.unpack_from(buf, p + key)[0]
            if level:
                total += self.chunk_bytes(child, dims, depth + 1, seen, levels, level - 1)
            else:
                size = _U32.unpack_from(buf, p)[0]
                self.d.inside(child, size)
                total += size
        return total

    def small_string(self, ftype: dict, raw) -> str | None:
        """A scalar string dataset's value, as h5lean reads it."""
        if raw is None:
            _bail("unallocated string")  # the fill value: the library reads it
        if isinstance(raw[0], int):
            raw = self.d.at(*raw)
        buf, o = raw
        if ftype["vlen"]:
            text = self.vlen_bytes(buf, o, string=True)
            return text.decode("utf-8", "replace")
        if ftype["pad"] not in (0, 1):
            _bail("padding")
        return fixed_string(bytes(buf[o:o + ftype["size"]]), ftype["pad"])

    # ----------------------------------------------------------------------------------
    # attributes, decoded as h5lean decodes what the library returns

    def attrs(self, msgs: dict) -> dict:
        items = msgs.get(M_ATTR)
        if not items:
            return {}
        decoded = {}
        for buf, o, size in items:
            name, value = self.attribute(buf, o, size)
            if name in decoded:
                _bail("duplicate attribute")
            decoded[name] = value
        # the library lists compact attributes by name (strcmp: UTF-8 byte order)
        return {k: decoded[k] for k in sorted(decoded, key=lambda s: s.encode("utf-8"))}

    def attribute(self, buf, o: int, size: int):
        end = o + size
        version = buf[o]
        nlen, tlen, slen = struct.unpack_from("<3H", buf, o + 2)
        if version == 1:
            p, pad = o + 8, True
        elif version in (2, 3):
            if buf[o + 1]:
                _bail("shared attribute type or space")
            p, pad = o + (9 if version == 3 else 8), False
        else:
            _bail("attribute version")
        raw = bytes(buf[p:p + nlen - 1])  # the library takes nlen - 1 bytes
        if not raw or b"\x00" in raw:  # (an empty name cannot be opened by name)
            _bail("attribute name")  # the library: "different length than stored length"
        name = raw.decode("utf-8")
        p += _pad8(nlen) if pad else nlen
        ftype = _datatype(buf, p, tlen)
        p += _pad8(tlen) if pad else tlen
        space, shape, _max = _dataspace(buf, p, slen)
        p += _pad8(slen) if pad else slen
        if p > end:
            _bail("attribute bounds")
        if space == 2:
            return name, None  # h5py.Empty
        n = 1
        for s in shape:
            n *= s
        fsize = ftype["size"]
        if n * max(ftype["msize"], 8) > MAX_ATTR_BYTES or p + n * fsize > end:
            _bail("attribute size")
        return name, self.attr_value(ftype, buf, p, n, shape)

    def attr_value(self, ft: dict, buf, p: int, n: int, shape: tuple):
        cls, size = ft["cls"], ft["size"]
        if cls == 3:  # fixed-length string
            if ft["pad"] not in (0, 1) or size == 0:
                _bail("padding")
            texts = [fixed_string(bytes(buf[p + i * size:p + (i + 1) * size]), ft["pad"])
                     for i in range(n)]
            return texts[0] if not shape else texts
        if cls == 9:
            if ft["vlen"]:  # variable-length strings
                texts = [self.vlen_bytes(buf, p + 16 * i, string=True).decode(
                    "utf-8", "surrogateescape") for i in range(n)]
                return texts[0] if not shape else texts
            return self.char_arrays(ft, buf, p, n, scalar=not shape)
        if cls not in (0, 1):
            _bail("attribute class")
        code = (_FLOAT_CODE if cls == 1 else _INT_CODE)[size]
        if cls == 0 and not ft["signed"]:
            code = code.upper()
        values = list(struct.unpack_from(f"{'>' if ft['be'] else '<'}{n}{code}", buf, p))
        if not shape:
            return values[0]
        if n > MAX_ATTR_ELEMENTS:
            kind = "f" if cls == 1 else ("i" if ft["signed"] else "u")
            lo, hi = min_max(values)
            dtname = numpy_dtype_name(kind, size, ft["be"])
            return f"<{dtname} array, shape {shape}, min {lo:.6g}, max {hi:.6g}>"
        return nest_list(values, shape)

    def char_arrays(self, ft: dict, buf, p: int, n: int, *, scalar: bool):
        """MATLAB_fields: variable-length arrays of 1-byte strings (see h5lean)."""
        base = ft["base"]
        if base is None or base["cls"] != 3 or base["size"] != 1:
            _bail("vlen of what")
        raw = [self.vlen_bytes(buf, p + 16 * i, string=False) for i in range(n)]
        if sum(len(r) for r in raw) > MAX_ATTR_BYTES:
            _bail("vlen size")
        if scalar:
            return [bytes([c]).rstrip(b"\x00").decode("utf-8", "replace") for c in raw[0]]
        return [r.replace(b"\x00", b"").decode("utf-8", "replace") for r in raw]

    def vlen_bytes(self, buf, p: int, *, string: bool) -> bytes:
        """One variable-length element's bytes from its global heap (a string ends at
        its first NUL, as C reads it); a null or empty one is left to the library."""
        length, coll, index = _VLEN_ID.unpack_from(buf, p)
        if coll == 0 or (not string and length == 0):
            _bail("null or empty vlen")
        objects = self.heaps.get(coll)
        if objects is None:
            objects = self.heaps[coll] = self.global_heap(coll)
        obj = objects.get(index)
        if obj is None or obj[1] != length:
            _bail("heap object")  # the library: "expected size does not match"
        hb, ho = obj[0]
        raw = bytes(hb[ho:ho + length])
        return raw.split(b"\x00", 1)[0] if string else raw

    def global_heap(self, addr: int) -> dict:
        """{index: ((buffer, offset), size)} of a global heap collection, decoded as the
        library decodes it (objects up to its exact end; index 0 is free space)."""
        buf, o = self.d.at(addr, 16)
        if buf[o:o + 4] != b"GCOL" or buf[o + 4] != 1:
            _bail("global heap")
        size = _U64.unpack_from(buf, o + 8)[0]
        if size < 4096:
            _bail("global heap size")
        buf, o = self.d.at(addr, size)
        objects, p, end = {}, o + 16, o + size
        while p < end:
            self.spend()
            if p + 16 > end:
                if (end - p) & 7:
                    _bail("global heap free space not aligned")
                break  # too small for an object: free space
            index, _rc, osize = _GCOL_OBJ.unpack_from(buf, p)
            need = 16 + _pad8(osize) if index else osize
            if index in objects or need < 16 or p + need > end or (
                    not index and osize & 7):
                _bail("heap object bounds")
            if index:
                objects[index] = ((buf, p + 16), osize)
            p += need
        return objects


# --------------------------------------------------------------------------------------
# message decoders (pure functions of a buffer, an offset and the message size)

def _check_siblings(levels: dict) -> None:
    """Each level's nodes, left to right, link to each other and to nothing else: the
    library follows these links when it sizes a group (h5py asks it for the root)."""
    for nodes in levels.values():
        for i, (_addr, left, right) in enumerate(nodes):
            if left != (nodes[i - 1][0] if i else UNDEF) or right != (
                    nodes[i + 1][0] if i + 1 < len(nodes) else UNDEF):
                _bail("B-tree siblings")


def _kind(msgs: dict) -> str:
    if M_STAB in msgs:
        if M_LAYOUT in msgs or M_DTYPE in msgs or M_SPACE in msgs:
            _bail("group and dataset")
        return "group"
    if M_LAYOUT in msgs:
        return "dataset"
    _bail("neither group nor dataset")  # a committed datatype, or damage


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _dataspace(buf, o: int, size: int):
    """(class: 0 scalar, 1 simple, 2 null; shape; max dims or None)."""
    version, rank, flags = buf[o], buf[o + 1], buf[o + 2]
    if version == 1:
        cls, p = (1 if rank else 0), o + 8
    elif version == 2:
        cls, p = buf[o + 3], o + 4
        if cls not in (0, 1, 2) or (cls != 1) != (rank == 0):
            _bail("dataspace class")
    else:
        _bail("dataspace version")
    if rank > MAX_RANK or flags & ~1 or p + 8 * rank * (1 + (flags & 1)) > o + size:
        _bail("dataspace")
    shape = struct.unpack_from(f"<{rank}Q", buf, p)
    if any(s >> 63 for s in shape):
        _bail("dimension")
    maxdims = None
    if flags & 1:
        maxdims = struct.unpack_from(f"<{rank}Q", buf, p + 8 * rank)
        if maxdims != shape and any(m < s for m, s in zip(maxdims, shape)):
            _bail("max dims")
    return cls, shape, maxdims


def _datatype(buf, o: int, size: int, depth: int = 0) -> dict:
    """The fields of a datatype message that the tree and attribute values need."""
    cv, b0, b1, _b2, tsize = _DTYPE.unpack_from(buf, o)
    cls, version = cv & 15, cv >> 4
    if version not in (1, 2, 3) or size < 8 or depth > 1:
        _bail("datatype version")
    ft = {"cls": cls, "size": tsize, "msize": tsize, "be": bool(b0 & 1), "vlen": False,
          "signed": False, "pad": None, "standard": False, "base": None}
    if cls == 0:  # fixed-point
        if size < 12:
            _bail("datatype size")
        offset, precision = struct.unpack_from("<HH", buf, o + 8)
        ft["signed"] = bool(b0 & 8)
        ft["standard"] = (offset == 0 and precision == 8 * tsize and tsize in _INT_CODE
                          and not b0 & 6)
    elif cls == 1:  # floating point
        if size < 20 or b0 & 0x40:
            _bail("float layout")  # VAX order
        layout = struct.unpack_from("<HHBBBBI", buf, o + 8)
        ft["standard"] = (tsize in _IEEE and layout[0] == 0
                          and layout[1:] == _IEEE[tsize][:6] and b1 == _IEEE[tsize][6]
                          and (b0 >> 4) & 3 == 2 and not b0 & 0x0E)
    elif cls == 3:  # fixed-length string
        ft["pad"] = b0 & 15
        if b0 >> 4 > 1:
            _bail("character set")  # neither ASCII nor UTF-8: h5py refuses it
    elif cls == 7:  # reference
        if b0 & 15 != 0 or tsize != 8:
            _bail("reference kind")  # region or new-style references
    elif cls == 9:  # variable-length
        base = _datatype(buf, o + 8, size - 8, depth + 1)
        ft["base"] = base
        if tsize != 16:
            _bail("vlen size")  # on disk: length, heap collection, object index
        if b0 & 15 == 1:  # a string
            if base["size"] != 1 or b1 & 15 > 1:
                _bail("vlen string base")
            ft["vlen"], ft["msize"] = True, 8  # in memory: a char *
        elif b0 & 15 == 0:
            ft["msize"] = 16  # hvl_t
        else:
            _bail("vlen kind")
    else:
        _bail("datatype class")  # compound, enum, array, bitfield, opaque, time
    if ft["size"] == 0 or (cls in (0, 1) and not ft["standard"]):
        _bail("datatype size or number layout")  # the library checks unused bits and more
    return ft


def _describe(ft: dict) -> tuple[str, str, int]:
    """(dtype string, kind, size) as h5lean's describe gives them."""
    cls, size = ft["cls"], ft["size"]
    if cls == 1:
        return (*numeric_name(True, size, ft["be"], True), size)
    if cls == 0:
        return (*numeric_name(False, size, ft["be"], ft["signed"]), size)
    if cls == 3:
        return (f"S{size}", "string", size)
    if cls == 9 and ft["vlen"]:
        return ("str", "string", ft["msize"])  # the library reports the in-memory char *
    if cls == 7:
        return ("reference", "reference", size)
    _bail("dataset class")


def _filters(msgs: dict) -> list[str]:
    """The filter pipeline, named as h5lean names it (known filters only)."""
    if M_FILTERS not in msgs:
        return []
    buf, o, size = msgs[M_FILTERS]
    end = o + size
    version, count = buf[o], buf[o + 1]
    p = o + (8 if version == 1 else 2)
    if version not in (1, 2) or count > 32:
        _bail("filter pipeline")
    out = []
    for _ in range(count):
        fid = _U16.unpack_from(buf, p)[0]
        if version == 1 or fid >= 256:
            nlen, _flags, nvals = struct.unpack_from("<3H", buf, p + 2)
            p += 8
            if nlen and (b"\x00" not in bytes(buf[p:p + nlen]) or (
                    version == 1 and nlen & 7)):
                _bail("filter name")  # NUL-terminated, padded to 8 in version 1
            p += nlen
        else:
            _flags, nvals = struct.unpack_from("<2H", buf, p + 2)
            p += 6
        vals = struct.unpack_from(f"<{nvals}I", buf, p) if nvals else ()
        p += 4 * nvals
        if version == 1 and nvals & 1:
            p += 4
        if p > end or fid not in FILTER_NAMES:
            _bail("filter")
        out.append(f"gzip({vals[0]})" if fid == 1 and vals else FILTER_NAMES[fid])
    return out


def _fill(mtype: int, buf, o: int, size: int) -> None:
    """Bounds-check a fill value message, which the library decodes on open."""
    if mtype == M_FILL:
        version, p = buf[o], o + 4
        if version in (1, 2):
            defined = buf[o + 3] if version == 2 else 1
        elif version == 3:
            defined, p = buf[o + 1] & 0x20, o + 2
        else:
            _bail("fill version")
        if defined and (p + 4 > o + size or
                        p + 4 + _U32.unpack_from(buf, p)[0] > o + size):
            _bail("fill value")
    elif 4 + _U32.unpack_from(buf, o)[0] > size:
        _bail("old fill value")
