"""Sizes and depths checked before allocation or recursion.

- :func:`load_yaml`: YAML (specs; JSON is YAML) with nesting depth, alias count, the size
  the document would have with every alias expanded (the "billion laughs" bomb), and
  recursive aliases all bounded; returns the node tree and the data.
- :func:`check_npy` / :func:`check_npz`: a ``.npy`` header's shape and dtype against the
  bytes actually there, before NumPy allocates.
- :func:`check_input_budget`: a model's input sizes against a memory budget before it is
  built.
"""

from __future__ import annotations

import math
import os

from wtransplant.errors import InputError, one_line

MAX_YAML_DEPTH = 100
MAX_YAML_ALIASES = 1000
#: nodes the document would have with every alias expanded
MAX_YAML_EXPANDED = 1_000_000
#: one sample of a model's inputs, times a factor for the activations inside it
DEFAULT_MEMORY_BUDGET = 8 << 30
ACTIVATION_FACTOR = 64


def load_yaml(text: str, display: str):
    """(node tree, data) of a YAML document read with the safe loader, bounded."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0
        aliases = 0
        open_anchors: set = set()

        def compose_node(self, parent, index):
            ev = self.peek_event()
            if isinstance(ev, yaml.AliasEvent):
                Loader.aliases += 1
                if Loader.aliases > MAX_YAML_ALIASES:
                    _fail(display, ev, f"more than {MAX_YAML_ALIASES} YAML aliases")
                if ev.anchor in Loader.open_anchors:
                    _fail(display, ev, f"alias *{ev.anchor} refers to a node that contains "
                                       f"it (a recursive structure)")
                return super().compose_node(parent, index)
            Loader.depth += 1
            if Loader.depth > MAX_YAML_DEPTH:
                _fail(display, ev, f"nested more than {MAX_YAML_DEPTH} levels deep")
            anchor = getattr(ev, "anchor", None)
            if anchor:
                Loader.open_anchors.add(anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                Loader.depth -= 1
                if anchor:
                    Loader.open_anchors.discard(anchor)

    Loader.open_anchors = set()
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, display)
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def _fail(display: str, ev, msg: str):
    line = ev.start_mark.line + 1 if getattr(ev, "start_mark", None) else None
    raise InputError(f"{display}:{line}: {msg}; refused" if line else f"{display}: {msg}; "
                     f"refused")


def _check_expansion(root, display: str) -> None:
    """Count the nodes of the fully expanded document (memoised per shared node,
    iteratively) and refuse past MAX_YAML_EXPANDED."""
    import yaml

    size: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.SequenceNode):
            kids = node.value
        elif isinstance(node, yaml.MappingNode):
            kids = [x for kv in node.value for x in kv]
        else:
            size[id(node)] = 1
            continue
        if not done:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        total = 1 + sum(size.get(id(k), 1) for k in kids)
        size[id(node)] = total
        if total > MAX_YAML_EXPANDED:
            raise InputError(f"{display}:{node.start_mark.line + 1}: YAML aliases expand to "
                             f"more than {MAX_YAML_EXPANDED} nodes (an alias bomb); refused")


# --------------------------------------------------------------------------------------
# NumPy files


def npy_header(fh, display: str) -> tuple:
    """(shape, dtype, fortran_order, data offset) of the .npy header at ``fh``'s position;
    InputError (one line naming ``display``) if it is not one. Nothing is allocated."""
    import numpy as np

    start = fh.tell()
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(f"not a valid .npy file: {one_line(e)}",
                         path=display) from None
    return tuple(shape), dtype, bool(fortran), fh.tell() - start


def _npy_header(fh, display: str):
    shape, dtype, _, offset = npy_header(fh, display)
    return shape, dtype, offset


def check_declared(shape, dtype, available: int, display: str) -> None:
    """Refuse object (pickled) arrays, and a header declaring more bytes than follow."""
    if dtype.hasobject:
        raise InputError("holds Python objects (pickles), which are never loaded",
                         path=display)
    n = math.prod(shape)
    need = n * dtype.itemsize
    if need > available:
        raise InputError(f"the header declares shape {tuple(shape)} {dtype} ({need} bytes) "
                         f"but only {available} bytes of data follow; refused before "
                         f"allocating", path=display)


def check_npy(path) -> None:
    """Refuse a .npy whose header declares more data than the file holds."""
    display = str(path)
    with open(path, "rb") as fh:
        shape, dtype, offset = _npy_header(fh, display)
        size = os.fstat(fh.fileno()).st_size
    check_declared(shape, dtype, size - offset, display)


def check_npz(path, *, max_ratio: int = 1000, floor: int = 64 << 20) -> None:
    """Refuse a .npz whose members declare more data than they hold (checked from each
    member's header and its uncompressed size) or that expand like a zip bomb."""
    import zipfile  # (here: an HDF5 inspect does not pay its import)
    display = str(path)
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                where = f"{display}!{info.filename}"
                if info.file_size > floor and info.file_size > max_ratio * max(
                        info.compress_size, 1):
                    raise InputError(f"declares {info.file_size} bytes but compresses to "
                                     f"{info.compress_size}; refusing a possible zip bomb",
                                     path=where)
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as fh:
                    shape, dtype, offset = _npy_header(fh, where)
                check_declared(shape, dtype, info.file_size - offset, where)
    except zipfile.BadZipFile as e:
        raise InputError(f"not a valid .npz (zip) file: {e}", path=display) from None


def check_array_file(path) -> None:
    """check_npy / check_npz by content (never by suffix alone)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError:
        return  # the loader reports it
    if head == b"\x93NUMPY":
        check_npy(path)
    elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        check_npz(path)


# --------------------------------------------------------------------------------------
# model sizes


def memory_budget() -> int:
    env = os.environ.get("WTRANSPLANT_MEMORY_BUDGET")
    if env:
        try:
            return int(float(env))
        except ValueError:
            pass
    return DEFAULT_MEMORY_BUDGET


def check_input_budget(shapes: dict, where: str, dtype_bytes: int = 4) -> None:
    """Refuse model inputs whose one-sample size, times a factor for the activations the
    model computes from it, exceeds the memory budget (WTRANSPLANT_MEMORY_BUDGET bytes,
    default 8 GiB)."""
    budget = memory_budget()
    for name, shape in shapes.items():
        dims = [d for d in (shape or ()) if d is not None]
        if any(not isinstance(d, int) or d < 0 for d in dims):
            continue  # the builder reports bad shapes
        need = math.prod(dims) * dtype_bytes * ACTIVATION_FACTOR
        if need > budget:
            raise InputError(
                f"{where}: input {name!r} of shape {tuple(shape)} needs about {need >> 20} "
                f"MiB per sample for the model's activations, more than the memory budget of "
                f"{budget >> 20} MiB (set WTRANSPLANT_MEMORY_BUDGET to allow more); refused "
                f"before building")


def spec_input_shapes(ms) -> dict:
    """Input name -> one sample's shape, from a spec's model section (any of its forms)."""
    out = {}
    if getattr(ms, "input_shape", None):
        out["input"] = ms.input_shape
    inputs = getattr(ms, "inputs", None)
    if isinstance(inputs, dict):
        out.update(inputs)
    app = getattr(ms, "application", None)
    if isinstance(app, dict) and isinstance(app.get("args"), dict):
        shape = app["args"].get("input_shape")
        if isinstance(shape, list | tuple):
            out["input"] = shape
    return {k: list(v) for k, v in out.items() if isinstance(v, list | tuple)}
