"""ONNX initializers as a :class:`~wtransplant.reading.sources.base.Source`.

The initializers of an ``.onnx`` model are exactly the weights a user wants in a Keras
model they define. This module reads them without running anything:

* the file is bounded before it is parsed (protobuf's 2 GiB limit; the whole model is
  one message), and parsed with ``onnx``'s protobuf classes only (no checker, no shape
  inference, no external data: ``load_external_data`` is never asked for);
* every initializer's declared shape and data type is checked against the bytes it holds
  before anything is decoded; an initializer whose data lives in another file
  (``data_location = EXTERNAL``) is refused unless the caller asked for data outside the
  file (``follow_links``: ``--follow-links``), and even then its location must stay in
  the model's folder and its offset/length inside that file;
* names and shapes are listed as ONNX gives them (tree paths ``/<initializer name>``), in
  the order the graph first uses them (the module order);
  each tensor also gets a *writer's view* name: the initializer's own name when the
  exporter kept the module's (``features.0.weight``), else a name made from the node
  that consumes it (``onnx::GRU_108``, the ``W`` input of node ``/rnn/GRU``, is
  ``rnn.W``; a BatchNorm ``scale`` is ``<module>.weight``...) so a draft spec can map it;
* the writer evidence is the model's ``producer_name``/``producer_version``.

The ``onnx`` package is imported only when a file is opened as ONNX (``sniff`` looks at
bytes), so ``inspect`` of an HDF5 file never imports it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from wtransplant._lazy import lazy
from wtransplant.errors import InputError, UnsafeInputError
from wtransplant.reading.h5io import fmt_bytes
from wtransplant.reading.sources.base import (
    MAX_TENSOR_BYTES,
    Source,
    SourceInfo,
    check_limit,
    dtype_kind,
    flat_tree,
    tensor_node,
)
from wtransplant.reading.tree import FileTree

np = lazy("numpy")

#: protobuf refuses messages over 2 GiB: larger models keep their tensors as external data
MAX_ONNX_BYTES = 2 << 30
MAX_DIMS = 32
#: ModelProto field tags that may follow ``ir_version`` (field 1, serialized first)
_MODEL_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}

#: ONNX TensorProto.DataType -> numpy dtype for the types read as numbers (little-endian)
_NP = {1: "<f4", 2: "u1", 3: "i1", 4: "<u2", 5: "<i2", 6: "<i4", 7: "<i8", 9: "bool",
       10: "<f2", 11: "<f8", 12: "<u4", 13: "<u8"}
#: TensorProto field that holds each type's values when not in raw_data
_TYPED_FIELD = {1: "float_data", 2: "int32_data", 3: "int32_data", 4: "int32_data",
                5: "int32_data", 6: "int32_data", 7: "int64_data", 9: "int32_data",
                10: "int32_data", 11: "double_data", 12: "uint64_data", 13: "uint64_data"}
_TYPE_NAMES = {0: "undefined", 8: "string", 14: "complex64", 15: "complex128",
               16: "bfloat16"}

#: (op, input name) -> the PyTorch role the consuming node gives a generated initializer;
#: ops not listed keep ONNX's own input name (GRU/LSTM/RNN: W, R, B in ONNX's gate order)
_TORCH_ROLE = {("Conv", "W"): "weight", ("Conv", "B"): "bias",
               ("ConvTranspose", "W"): "weight", ("ConvTranspose", "B"): "bias",
               ("BatchNormalization", "scale"): "weight", ("BatchNormalization", "B"): "bias",
               ("BatchNormalization", "input_mean"): "running_mean",
               ("BatchNormalization", "mean"): "running_mean",
               ("BatchNormalization", "input_var"): "running_var",
               ("BatchNormalization", "var"): "running_var",
               ("InstanceNormalization", "scale"): "weight",
               ("InstanceNormalization", "B"): "bias",
               ("LayerNormalization", "Scale"): "weight", ("LayerNormalization", "B"): "bias",
               ("PRelu", "slope"): "weight"}
_GENERATED = re.compile(r"^(onnx::|_v_|/)|^\d+$")


def is_onnx_head(head: bytes) -> bool:
    """A serialized ModelProto starts with field 1 (ir_version, a small varint) followed by
    another ModelProto field."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    return 1 <= head[1] <= 64 and head[2] in _MODEL_TAGS


class OnnxSource(Source):
    container = "onnx"

    def __init__(self, path: Path, model, follow_links: bool):
        self.path = path
        self.display = str(path)
        self.file_size = path.stat().st_size
        self.follow_links = follow_links
        self.model = model
        self._inits: dict[str, object] = {}
        self._external: dict[str, tuple[Path, int, int]] = {}
        self._nodes: list = []

    # -- choosing and opening
    @classmethod
    def sniff(cls, head: bytes, path: Path) -> bool:
        if is_onnx_head(head):
            return True
        # named .onnx but not a model: say so as ONNX (HDF5 under that name is still HDF5)
        return path.suffix.lower() == ".onnx" and not head.startswith(b"\x89HDF")

    @classmethod
    def open(cls, path: Path, *, follow_links: bool = False, in_memory: bool = False
             ) -> OnnxSource:
        size = path.stat().st_size
        if size > MAX_ONNX_BYTES:
            raise InputError(f"ONNX file of {fmt_bytes(size)} is over protobuf's "
                             f"{fmt_bytes(MAX_ONNX_BYTES)} limit for one model (larger "
                             f"models keep tensors as external data)", path=str(path))
        try:
            import onnx
            from google.protobuf.message import DecodeError
        except ImportError:  # pragma: no cover - onnx comes with tf2onnx
            raise InputError("reading ONNX files needs the 'onnx' package "
                             "(pip install onnx)", path=str(path)) from None
        with open(path, "rb") as fh:
            data = fh.read(MAX_ONNX_BYTES + 1)
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except (DecodeError, ValueError, RuntimeError) as e:
            why = " ".join(str(e).split()) or type(e).__name__
            raise InputError(f"not a valid ONNX model (protobuf parse failed: {why}; "
                             f"truncated or not ONNX)", path=str(path)) from None
        del data
        if model.ir_version <= 0 or not model.HasField("graph"):
            raise InputError("not an ONNX model (no ir_version or no graph in the "
                             "protobuf message)", path=str(path))
        src = cls(path, model, follow_links)
        src._index()
        return src

    # -- the model's initializers and the nodes that use them
    def _index(self) -> None:
        g = self.model.graph
        for t in g.initializer:
            if t.name in self._inits:
                raise InputError(f"two initializers named {t.name!r}", path=self.display)
            self._check(t)
            self._inits[t.name] = t
        if len(g.sparse_initializer):
            raise InputError(f"{len(g.sparse_initializer)} sparse initializer(s) (e.g. "
                             f"{g.sparse_initializer[0].values.name!r}): not supported",
                             path=self.display)

    def _check(self, t) -> None:
        """Declared shape and type against what the initializer holds, before decoding."""
        name = t.name
        dims = [int(d) for d in t.dims]
        if len(dims) > MAX_DIMS or any(d < 0 for d in dims):
            raise InputError(f"initializer {name!r} declares shape {tuple(dims)}",
                             path=self.display)
        if t.data_location == 1:  # TensorProto.EXTERNAL
            self._external[name] = self._external_place(t, dims)
            return
        dt = _NP.get(t.data_type)
        if dt is None:
            return  # listed as non-numeric; read() says why
        n = 1
        for d in dims:
            n *= d
        itemsize = np.dtype(dt).itemsize
        if t.raw_data:
            if len(t.raw_data) != n * itemsize:
                raise UnsafeInputError(
                    f"initializer {name!r} declares shape {tuple(dims)} {np.dtype(dt)} "
                    f"({fmt_bytes(n * itemsize)}) but holds {fmt_bytes(len(t.raw_data))}",
                    path=self.display)
        else:
            held = len(getattr(t, _TYPED_FIELD[t.data_type]))
            if held != n:
                raise UnsafeInputError(
                    f"initializer {name!r} declares shape {tuple(dims)} ({n} values) but "
                    f"holds {held}", path=self.display)

    def _external_place(self, t, dims) -> tuple[Path, int, int]:
        entries = {e.key: e.value for e in t.external_data}
        loc = entries.get("location", "")
        if not self.follow_links:
            raise UnsafeInputError(
                f"initializer {t.name!r} keeps its data in the external file {loc!r}: "
                f"refused (only `wtransplant inspect --follow-links` reads data outside the "
                f"model file; spec and rebuild read the model file alone)",
                path=self.display)
        base = self.path.resolve().parent
        target = (base / loc).resolve()
        if (not loc or os.path.isabs(loc) or ".." in Path(loc).parts
                or base not in target.parents):
            raise UnsafeInputError(f"initializer {t.name!r}: external data location {loc!r} "
                                   f"is outside the model's folder: refused",
                                   path=self.display)
        try:
            offset = int(entries.get("offset", "0"))
            length = int(entries["length"]) if "length" in entries else None
            size = target.stat().st_size
        except (ValueError, OSError) as e:
            raise InputError(f"initializer {t.name!r}: external data {loc!r}: {e}",
                             path=self.display) from None
        dt = _NP.get(t.data_type)
        n = 1
        for d in dims:
            n *= d
        need = n * np.dtype(dt).itemsize if dt else None
        if length is None:
            length = need if need is not None else size - offset
        if offset < 0 or length < 0 or offset + length > size or \
                (need is not None and length != need):
            raise UnsafeInputError(
                f"initializer {t.name!r}: external data {loc!r} offset {offset} length "
                f"{length} does not fit the file ({size} bytes) or the declared shape "
                f"{tuple(dims)}", path=self.display)
        return target, offset, length

    # -- describing
    def writer_names(self) -> dict[str, str]:
        """ONNX initializer name -> the name in the writer's view (see module doc)."""
        names = getattr(self, "_writer_names", None)
        if names is not None:
            return names
        import onnx

        consumers: dict[str, list] = {}
        first: dict[str, int] = {}
        for k, node in enumerate(self.model.graph.node):
            for i, inp in enumerate(node.input):
                if inp in self._inits:
                    consumers.setdefault(inp, []).append((node, i))
                    first.setdefault(inp, k)
        # the graph's order (the module order), not the file's: unused ones last
        self._order = sorted(self._inits, key=lambda n: first.get(n, 1 << 62))
        opsets = {o.domain or "": o.version for o in self.model.opset_import}
        names, taken = {}, set(self._inits)
        for name in self._inits:
            new = name
            if _GENERATED.match(name) and len(consumers.get(name, ())) == 1:
                node, i = consumers[name][0]
                role = _input_name(onnx, node, i, opsets)
                role = _TORCH_ROLE.get((node.op_type, role), role)
                if node.op_type == "Gemm" and role == "B" and _attr(node, "transB", 0) == 1:
                    role = "weight"  # (out, in): a torch Linear's weight
                elif node.op_type == "Gemm" and role == "C":
                    role = "bias"
                scope = node_scope(node.name)
                cand = f"{scope}.{role}" if scope else f"{node.op_type.lower()}.{role}"
                if cand not in taken:
                    new = cand
                    taken.add(cand)
            names[name] = new
        self._writer_names = names
        self._consumers = {k: [(n.op_type, n.name, i) for n, i in v]
                           for k, v in consumers.items()}
        self._node_attrs = {n.name: node_attributes(n) for n in self.model.graph.node
                            if n.name}
        return names

    def _walk(self) -> FileTree:
        wn = self.writer_names()
        nodes = []
        for name in self._order:
            t = self._inits[name]
            dims = tuple(int(d) for d in t.dims)
            dt = _NP.get(t.data_type)
            if dt is not None:
                npdt = np.dtype(dt)
                dtype, kind, itemsize = str(npdt), dtype_kind(npdt), npdt.itemsize
            else:
                dtype = _TYPE_NAMES.get(t.data_type, f"onnx type {t.data_type}")
                kind = "string" if t.data_type == 8 else "other"
                itemsize = 0
            n = 1
            for d in dims:
                n *= d
            attrs = {"writer_name": wn[name]} if wn[name] != name else {}
            used = self._consumers.get(name)
            if used:
                attrs["used_by"] = ", ".join(f"{op} {nm or '?'} input {i}"
                                             for op, nm, i in used[:3])
                if self._node_attrs.get(used[0][1]):
                    attrs["node_attributes"] = self._node_attrs[used[0][1]]
            node = tensor_node(name, dims, dtype, kind, n * itemsize, attrs=attrs)
            if name in self._external:
                node.layout = "external"
                node.sources = [str(self._external[name][0])]
            nodes.append(node)
        m = self.model
        root = {"producer_name": m.producer_name, "producer_version": m.producer_version,
                "ir_version": int(m.ir_version),
                "opset": ", ".join(f"{o.domain or 'ai.onnx'} {o.version}"
                                   for o in m.opset_import),
                "layers": layer_ops(m.graph)}
        return flat_tree(self.path, self.display, self.file_size, nodes, root)

    def info(self) -> SourceInfo:
        m = self.model
        writer = " ".join(x for x in (m.producer_name, m.producer_version) if x) or None
        ops = [n.op_type for n in m.graph.node]
        ev = [f"ONNX model (ir_version {m.ir_version}, opset "
              f"{', '.join(str(o.version) for o in m.opset_import if not o.domain) or '?'}), "
              f"{len(self._inits)} initializers, {len(m.graph.node)} nodes"]
        if writer:
            ev.append(f"producer_name {m.producer_name!r}, producer_version "
                      f"{m.producer_version!r}")
        if ops:
            ev.append("layers: " + layer_ops(m.graph, 300, with_attributes=False))
        renamed = sum(1 for k, v in self.writer_names().items() if k != v)
        if renamed:
            k, v = next((k, v) for k, v in self.writer_names().items() if k != v)
            ev.append(f"{renamed} generated initializer names shown in the writer's view "
                      f"by the node that uses them (e.g. {k!r} -> {v!r})")
        attrs = {"producer_name": m.producer_name, "producer_version": m.producer_version,
                 "domain": m.domain, "model_version": int(m.model_version),
                 "metadata": {p.key: p.value for p in m.metadata_props}}
        return SourceInfo("onnx", writer, ev, attrs, reader=OnnxInitializers())

    @property
    def from_pytorch(self) -> bool:
        return self.model.producer_name.lower() == "pytorch"

    # -- reading
    def read(self, path: str, *, limit: int = MAX_TENSOR_BYTES) -> np.ndarray:
        name = path[1:] if path.startswith("/") and path[1:] in self._inits else path
        t = self._inits.get(name)
        if t is None:
            raise InputError(f"no initializer {name!r}", path=self.display)
        dims = tuple(int(d) for d in t.dims)
        dt = _NP.get(t.data_type)
        if dt is None:
            what = _TYPE_NAMES.get(t.data_type, f"type {t.data_type}")
            raise InputError(f"initializer {name!r} is {what}, not a numeric tensor "
                             f"wtransplant reads", path=self.display)
        npdt = np.dtype(dt)
        n = 1
        for d in dims:
            n *= d
        check_limit(n * npdt.itemsize, dims, name, self.display, limit)
        if name in self._external:
            target, offset, length = self._external[name]
            with open(target, "rb") as fh:
                fh.seek(offset)
                buf = fh.read(length)
            if len(buf) != n * npdt.itemsize:
                raise InputError(f"initializer {name!r}: external data ended early",
                                 path=self.display)
            a = np.frombuffer(buf, npdt)
        elif t.raw_data:
            a = np.frombuffer(t.raw_data, npdt)
        else:
            vals = getattr(t, _TYPED_FIELD[t.data_type])
            if t.data_type == 10:  # float16 bits stored in int32_data
                a = np.asarray(vals, np.uint16).view(np.float16)
            else:
                a = np.asarray(vals).astype(npdt)
        return a.reshape(dims).astype(npdt.newbyteorder("="), copy=True)

    def close(self) -> None:
        pass


def node_scope(node_name: str) -> str:
    """The PyTorch module a node belongs to, from the TorchScript exporter's node name
    (``/features/features.0/Conv`` -> ``features.0``; ``/rnn/GRU`` -> ``rnn``)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return ""
    return parts[-2]


#: node attributes worth showing next to a weight (what a spec must state by hand)
_SHOWN_ATTRS = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad",
                "epsilon", "momentum", "transA", "transB", "alpha", "beta", "axis",
                "hidden_size", "direction", "linear_before_reset", "activations",
                "ceil_mode", "count_include_pad")
#: shape bookkeeping the exporters emit around the layers (left out of the ``layers`` line)
_PLUMBING = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "ConstantOfShape",
             "Transpose", "Reshape", "Slice", "Cast", "Identity", "Concat", "Expand")


def node_attributes(node, limit: int = 200) -> str:
    """``pads=[1, 1, 1, 1], strides=[1, 1]``: the attributes a spec must state."""
    out = []
    for a in node.attribute:
        if a.name not in _SHOWN_ATTRS:
            continue
        if a.type == 1:
            v = f"{a.f:.6g}"
        elif a.type == 2:
            v = str(a.i)
        elif a.type == 3:
            v = a.s.decode("utf-8", "replace")
        elif a.type == 7:
            v = str(list(a.ints)[:8])
        elif a.type == 8:
            v = str([x.decode("utf-8", "replace") for x in a.strings][:8])
        else:
            continue
        out.append(f"{a.name}={v}")
    return ", ".join(out)[:limit]


def layer_ops(graph, limit: int = 2000, with_attributes: bool = True) -> str:
    """The graph's weight-bearing and structural nodes in order, with their module and
    attributes: ``Conv features.0 (pads=...) -> BatchNormalization features.1 (...) ->
    Relu -> MaxPool (kernel_shape=[2, 2], ...)``: what a hand-written spec follows."""
    parts = []
    for n in graph.node:
        if n.op_type in _PLUMBING:
            continue
        scope = node_scope(n.name)
        attrs = node_attributes(n, 120) if with_attributes else ""
        parts.append(n.op_type + (f" {scope}" if scope else "") +
                     (f" ({attrs})" if attrs else ""))
    text = " -> ".join(parts)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _input_name(onnx, node, i: int, opsets: dict) -> str:
    """The operator schema's name for input ``i`` (``W`` for a GRU's weights)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1),
                                      node.domain or "")
        formal = schema.inputs
        if i < len(formal):
            return formal[i].name
        if formal and formal[-1].option == formal[-1].option.Variadic:
            return f"{formal[-1].name}{i - len(formal) + 1}"
    except Exception:  # unknown op or domain: positional name
        pass
    return f"input{i}"


def _reader_base():
    from wtransplant.reading.formats import TorchStateDict

    return TorchStateDict


class OnnxInitializers(_reader_base()):
    """The format reader for an ONNX model's initializers: tensors under their writer's
    view names (``SourceTensor.name``; ``path`` stays the ONNX name), grouped per module
    like a PyTorch state_dict, under the ``onnx`` convention: PyTorch's layouts (ONNX Conv
    is (out, in, k...), Gemm with transB=1 holds (out, in)), with ONNX's own gate orders
    and stacked biases for its GRU/LSTM/RNN ops (inputs ``W``, ``R``, ``B``)."""

    name = "onnx"
    convention = "onnx"

    def detect(self, tree):
        from wtransplant.reading.formats import Detection

        a = tree.root_attrs
        writer = " ".join(str(a.get(k) or "") for k in ("producer_name", "producer_version"))
        return Detection(self.name, self.convention, writer.strip() or None, [])

    def tensors(self, tree):
        from wtransplant.reading.formats import SourceTensor

        out = []
        for ds in tree.numeric_datasets():
            name = ds.attrs.get("writer_name") or ds.path[1:]
            grp, _, role = name.rpartition(".")
            out.append(SourceTensor(name, ds.path, ds.shape, ds.shape, ds.dtype, grp, role))
        for i, t in enumerate(out):  # the graph's order (the tree's): the module order
            t.index = i
        return out
