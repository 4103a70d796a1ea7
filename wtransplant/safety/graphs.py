"""Untrusted graphs: a SavedModel is a program.

TensorFlow's own security guide says to run untrusted SavedModels only in a sandbox: a
serving function can call ``tf.io.write_file``, read files, list directories or run Python.
Before ``verify`` loads a SavedModel, :func:`check_savedmodel` reads ``saved_model.pb``
*as data* (a small protobuf wire-format reader: no TensorFlow, nothing executed), collects
the ops of every function TensorFlow 2's loader may run (the object graph's concrete
functions and every function they call, through call ops and function-valued attributes),
and refuses the file-system, network and process ops in :data:`DANGEROUS_OPS` (exit 2)
unless the caller trusts the graph (``--trust-graph``).

What this does not make safe: a model with only allowed ops can still compute anything or
take long; TensorFlow's own parsers (protobuf, checkpoint reader) still read the files; a
SavedModel without an object graph (TF 1 style) has its whole graph, saver included,
checked, so it needs ``--trust-graph``. Run truly untrusted programs in a sandbox.
"""

from __future__ import annotations

import re
from pathlib import Path

from wtransplant.errors import InputError, UnsafeInputError

#: ops that touch files, the network, other processes or Python
DANGEROUS_OPS = re.compile(
    r"^(ReadFile|WriteFile|MatchingFiles.*|Save.*|Restore.*|MergeV2Checkpoints|"
    r"PyFunc.*|EagerPyFunc|ImmutableConst|LoadAndRemapMatrix|PrintV2|"
    r"InitializeTableFromTextFile.*|.*Reader(V2)?|ReaderRead.*|Write.*Summary|"
    r"Create.*(Summary|Writer).*|ImportEvent|FlushSummaryWriter|CloseSummaryWriter|"
    r"Debug(Identity|NanCount|NumericSummary).*|Rpc|TryRpc|.*Rpc.*Client.*|"
    r".*(TFRecord|TextLine|FixedLengthRecord|Sql|LMDB|CSV|Snapshot).*Dataset.*|"
    r"(Experimental)?(Save|Load)Dataset.*|.*DatasetToTFRecord|.*Checkpoint.*|"
    r"DecodeProtoV2|EncodeProto|FileSystemSetConfiguration|"
    r"_Recv|_Send|_HostRecv|_HostSend)$")
#: ops that look like the above but only read or write variables in memory
SAFE_LOOKALIKES = frozenset({"ReadVariableOp", "ReadVariableXlaSplitND", "Exit"})
MAX_PB_BYTES = 1 << 31


class _Wire:
    """The few protobuf fields wtransplant needs, read from the wire format."""

    def __init__(self, buf: bytes, display: str):
        self.buf = buf
        self.display = display

    def fields(self, start: int, end: int):
        buf, i = self.buf, start
        while i < end:
            key, i = self._varint(i, end)
            no, wt = key >> 3, key & 7
            if wt == 0:
                v, i = self._varint(i, end)
                yield no, wt, v
            elif wt == 1:
                i += 8
            elif wt == 5:
                i += 4
            elif wt == 2:
                n, i = self._varint(i, end)
                if i + n > end:
                    raise InputError("saved_model.pb is truncated or not a SavedModel",
                                     path=self.display)
                yield no, wt, (i, i + n)
                i += n
            else:
                raise InputError(f"saved_model.pb is not a SavedModel (wire type {wt})",
                                 path=self.display)
        if i != end:
            raise InputError("saved_model.pb is truncated", path=self.display)
        del buf

    def _varint(self, i: int, end: int) -> tuple[int, int]:
        shift = v = 0
        while True:
            if i >= end or shift > 63:
                raise InputError("saved_model.pb is truncated or not a SavedModel",
                                 path=self.display)
            b = self.buf[i]
            i += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v, i
            shift += 7

    def text(self, span) -> str:
        return self.buf[span[0]:span[1]].decode("utf-8", "replace")

    def sub(self, span, no: int):
        for n, wt, v in self.fields(*span):
            if n == no and wt == 2:
                yield v


def _node(w: _Wire, span) -> tuple[str, str, list[str]]:
    """NodeDef: (name, op, names of functions its attributes refer to)."""
    name = op = ""
    funcs: list[str] = []
    for no, wt, v in w.fields(*span):
        if wt != 2:
            continue
        if no == 1:
            name = w.text(v)
        elif no == 2:
            op = w.text(v)
        elif no == 5:  # attr map entry: key 1, value 2 (AttrValue)
            for val in w.sub(v, 2):
                funcs += _attr_funcs(w, val)
    return name, op, funcs


def _attr_funcs(w: _Wire, span) -> list[str]:
    out = []
    for no, wt, v in w.fields(*span):
        if wt != 2:
            continue
        if no == 10:  # func: NameAttrList
            out += [w.text(n) for n in w.sub(v, 1)]
        elif no == 1:  # list: ListValue, func = 9
            for f in w.sub(v, 9):
                out += [w.text(n) for n in w.sub(f, 1)]
    return out


def graph_ops(path) -> dict[str, set[str]]:
    """op name -> the functions (or ``<graph>``) that use it, over what TF 2's loader may
    run. Reads ``saved_model.pb`` only."""
    p = Path(path)
    pb = p / "saved_model.pb"
    display = str(p)
    if not pb.is_file():
        raise InputError("no saved_model.pb (a text saved_model.pbtxt is not accepted)",
                         path=display)
    size = pb.stat().st_size
    if size > MAX_PB_BYTES:
        raise InputError(f"saved_model.pb of {size} bytes exceeds protobuf's 2 GiB limit",
                         path=display)
    w = _Wire(pb.read_bytes(), display)
    functions: dict[str, list[tuple[str, list[str]]]] = {}
    graph_nodes: list[tuple[str, list[str]]] = []
    roots: set[str] = set()
    has_object_graph = False
    for mg in w.sub((0, len(w.buf)), 2):  # SavedModel.meta_graphs
        for no, wt, v in w.fields(*mg):
            if wt != 2:
                continue
            if no == 2:  # graph_def
                for gno, gwt, gv in w.fields(*v):
                    if gwt != 2:
                        continue
                    if gno == 1:
                        _, op, fs = _node(w, gv)
                        graph_nodes.append((op, fs))
                    elif gno == 2:  # library
                        for fd in w.sub(gv, 1):
                            fname, nodes = "", []
                            for fno, fwt, fv in w.fields(*fd):
                                if fwt != 2:
                                    continue
                                if fno == 1:
                                    fname = next((w.text(n) for n in w.sub(fv, 1)), "")
                                elif fno == 3:
                                    _, op, fs = _node(w, fv)
                                    nodes.append((op, fs))
                            functions[fname] = nodes
            elif no == 7:  # object_graph_def
                has_object_graph = True
                for entry in w.sub(v, 2):  # concrete_functions map
                    roots.update(w.text(k) for k in w.sub(entry, 1))
    ops: dict[str, set[str]] = {}
    if not has_object_graph:  # TF 1 style: everything may run
        for op, _fs in graph_nodes:
            ops.setdefault(op, set()).add("<graph>")
        roots = set(functions)
    seen: set[str] = set()
    todo = [r for r in roots if r in functions]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for op, fs in functions.get(f, ()):
            if op in functions:
                todo.append(op)  # a call by op name
            else:
                ops.setdefault(op, set()).add(f)
            todo += [g for g in fs if g in functions]
    return ops


def dangerous(ops: dict[str, set[str]]) -> list[str]:
    return sorted(op for op in ops if op not in SAFE_LOOKALIKES and DANGEROUS_OPS.match(op))


def check_savedmodel(path, *, trust_graph: bool = False) -> None:
    """Refuse (UnsafeInputError, exit 2) a SavedModel whose loadable functions use
    file-system, network or process ops, unless ``trust_graph``."""
    if trust_graph:
        return
    ops = graph_ops(path)
    bad = dangerous(ops)
    if bad:
        where = sorted(ops[bad[0]])[0]
        more = f" (and {', '.join(bad[1:4])}{'...' if len(bad) > 4 else ''})" \
            if len(bad) > 1 else ""
        raise UnsafeInputError(
            f"the graph uses op {bad[0]}{more} in {where}, which can read or write files, "
            f"reach the network or run code outside the model; a SavedModel is a program: "
            f"load it only if you trust who made it (trust_graph / --trust-graph), ideally in "
            f"a sandbox", path=str(path))


_FLEX = re.compile(rb"Flex([A-Za-z][A-Za-z0-9_]*)")


def tflite_flex_ops(path) -> set[str]:
    """TensorFlow ops a ``.tflite`` file asks the Flex delegate to run (custom op codes
    ``Flex<Op>``), found in its bytes: conservative (a tensor name spelling such a code
    counts too), and no flatbuffer reader or TensorFlow is needed."""
    data = Path(path).read_bytes()
    return {m.group(1).decode("ascii") for m in _FLEX.finditer(data)}


def check_tflite(path, *, trust_graph: bool = False) -> None:
    """Refuse a LiteRT model whose Flex (TensorFlow) ops touch files, the network or
    processes, unless ``trust_graph``."""
    if trust_graph:
        return
    ops = tflite_flex_ops(path)
    bad = dangerous({op: {"<flex>"} for op in ops})
    if bad:
        raise UnsafeInputError(
            f"the model asks TensorFlow to run op {bad[0]} (a Flex op), which can read or "
            f"write files, reach the network or run code outside the model; load it only if "
            f"you trust who made it (trust_graph / --trust-graph)", path=str(path))
