"""Drafting from an ONNX graph: the model's nodes say what a state_dict cannot (padding,
strides, pooling, activations, a BatchNorm's epsilon).

For a chain of the ops below (what ``torch.onnx.export`` writes for a plain CNN or MLP),
the draft is read off the graph, every layer's weights mapped by their writer's-view
names, with nothing left undecided. Any other graph (branches, ops not listed, grouped
convolutions, asymmetric pooling...) returns None and the draft falls back to the one
drawn from the tensors alone (``draft._draft_layers``), exactly as for a state_dict.

Each op is drafted by one small handler registered with ``@op_handler("Conv", ...)``
in ``_HANDLERS`` (the way tf2onnx registers one handler per op); an op with no
handler, or outside its handler's rank/attribute condition, ends the chain.

Layer 1: reads the parsed ``onnx.ModelProto`` of an open
:class:`~wtransplant.reading.sources.onnxfile.OnnxSource`; no Keras.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import yaml

#: ops that rename nothing and compute nothing at inference
_SKIP = ("Identity", "Dropout")
_ACTS = {"Relu": {"class": "ReLU"}, "Sigmoid": {"class": "Activation", "activation": "sigmoid"},
         "Tanh": {"class": "Activation", "activation": "tanh"}}
_POOLS = {"MaxPool": "MaxPooling2D", "AveragePool": "AveragePooling2D"}


class _NotAChain(Exception):
    pass


def _attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        if a.type == 1:
            out[a.name] = float(f"{a.f:.7g}")  # float32 as written: 1e-05, not 9.99e-06
        elif a.type == 2:
            out[a.name] = int(a.i)
        elif a.type == 3:
            out[a.name] = a.s.decode("utf-8", "replace")
        elif a.type == 7:
            out[a.name] = [int(v) for v in a.ints]
    return out


def _name(scope: str, op: str, used: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_]+", "_", scope).strip("_") or op.lower()
    if base[0].isdigit():
        base = "l_" + base
    name, k = base, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


class _Chain:
    """The draft so far, which each op handler extends: layers, weights (Keras path ->
    writer's-view name), the names used, and the rank of the tensor flowing (2 or 4)."""

    def __init__(self, writer_names: dict, shapes: dict, rank: int):
        self.writer_names, self.shapes, self.rank = writer_names, shapes, rank
        self.layers: list = []
        self.weights: dict = {}
        self.used: set = set()

    def name(self, scope: str, op: str) -> str:
        return _name(scope, op, self.used)

    def weight(self, key: str, tensor: str) -> None:
        self.weights[key] = self.writer_names.get(tensor, tensor)


class _Handler(NamedTuple):
    fn: Callable
    rank: int | None
    when: Callable | None


#: ONNX op type -> the handler that drafts its Keras layer(s)
_HANDLERS: dict[str, _Handler] = {}


def op_handler(*ops: str, rank: int | None = None, when: Callable | None = None):
    """Register the decorated ``fn(chain, node, attrs, scope)`` as the drafter of ``ops``,
    for a tensor of ``rank`` (any if None) and attributes where ``when(attrs)`` holds; a
    node of these ops outside that ends the chain, like an op with no handler."""
    def register(fn):
        for op in ops:
            _HANDLERS[op] = _Handler(fn, rank, when)
        return fn
    return register


def _handler_for(op: str, rank: int, a: dict) -> Callable:
    h = _HANDLERS.get(op)
    if h is None or (h.rank is not None and h.rank != rank) or (h.when and not h.when(a)):
        raise _NotAChain(f"op {op}")
    return h.fn


def _kernel_and_bias(chain: _Chain, node, lay: dict) -> None:
    """Append ``lay`` with its kernel from input 1 and its bias from input 2, or
    ``use_bias: False`` when the node has none (Conv, Gemm)."""
    chain.weight(f"{lay['name']}/kernel", node.input[1])
    if len(node.input) > 2 and node.input[2]:
        chain.weight(f"{lay['name']}/bias", node.input[2])
    else:
        lay["use_bias"] = False
    chain.layers.append(lay)


@op_handler(*_SKIP)
def _skip(chain, node, a, scope):
    pass


@op_handler("Conv", rank=4)
def _conv(chain, node, a, scope):
    o, _i, kh, kw = chain.shapes[node.input[1]]
    if a.get("group", 1) != 1 or a.get("auto_pad", "NOTSET") != "NOTSET" or \
            any(d != 1 for d in a.get("dilations", [1, 1])):
        raise _NotAChain("grouped, dilated or auto-padded convolution")
    strides = a.get("strides", [1, 1])
    pads = a.get("pads", [0, 0, 0, 0])
    name = chain.name(scope, node.op_type)
    if any(pads) and not (strides == [1, 1] and kh % 2 and kw % 2 and
                          pads == [kh // 2, kw // 2, kh // 2, kw // 2]):
        chain.layers.append({"class": "ZeroPadding2D", "name": name + "_pad",
                             "padding": [[pads[0], pads[2]], [pads[1], pads[3]]]})
        padding = "valid"
    else:
        padding = "same" if any(pads) else "valid"
    lay = {"class": "Conv2D", "name": name, "filters": o, "kernel_size": [kh, kw],
           "padding": padding}
    if strides != [1, 1]:
        lay["strides"] = strides
    _kernel_and_bias(chain, node, lay)


@op_handler("BatchNormalization")
def _batchnorm(chain, node, a, scope):
    if a.get("training_mode", 0):
        raise _NotAChain("BatchNormalization in training mode")
    name = chain.name(scope, node.op_type)
    chain.layers.append({"class": "BatchNormalization", "name": name,
                         "epsilon": a.get("epsilon", 1e-5),
                         "momentum": a.get("momentum", 0.9)})
    for i, var in enumerate(("gamma", "beta", "moving_mean", "moving_variance"), 1):
        chain.weight(f"{name}/{var}", node.input[i])


@op_handler(*_ACTS)
def _activation(chain, node, a, scope):
    op = node.op_type
    chain.layers.append({**_ACTS[op], "name": chain.name(scope or op, op)})


@op_handler("Softmax", rank=2, when=lambda a: a.get("axis", -1) in (-1, 1))
def _softmax(chain, node, a, scope):
    op = node.op_type
    chain.layers.append({"class": "Softmax", "name": chain.name(scope or op, op)})


@op_handler(*_POOLS, rank=4)
def _pool(chain, node, a, scope):
    if any(a.get("pads", [0])) or a.get("ceil_mode", 0) or \
            a.get("auto_pad", "NOTSET") != "NOTSET":
        raise _NotAChain("padded or ceil-mode pooling")
    k = a["kernel_shape"]
    chain.layers.append({"class": _POOLS[node.op_type],
                         "name": chain.name(scope, node.op_type), "pool_size": k,
                         "strides": a.get("strides", k)})


@op_handler("GlobalAveragePool", rank=4)
def _global_average_pool(chain, node, a, scope):
    chain.layers.append({"class": "GlobalAveragePooling2D",
                         "name": chain.name(scope, node.op_type), "keepdims": True})


@op_handler("Flatten", when=lambda a: a.get("axis", 1) == 1)
def _flatten(chain, node, a, scope):
    if chain.rank != 2:
        chain.layers.append({"class": "Flatten",
                             "name": chain.name(scope or "flatten", node.op_type)})
    chain.rank = 2


@op_handler("Gemm", rank=2)
def _gemm(chain, node, a, scope):
    if a.get("transA", 0) or not a.get("transB", 0) or a.get("alpha", 1.0) != 1.0 \
            or a.get("beta", 1.0) != 1.0:
        raise _NotAChain("a Gemm other than x W^T + b")
    units = chain.shapes[node.input[1]][0]
    _kernel_and_bias(chain, node, {"class": "Dense", "name": chain.name(scope, node.op_type),
                                   "units": units})


def _chain_input(g, inits: set) -> tuple[str, int, list]:
    """(input name, rank, input shape channels-last) of a graph with one 2-D or 4-D input
    of known sizes and one output; raises _NotAChain otherwise."""
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise _NotAChain("one input and one output")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) not in (2, 4) or any(d is None or d <= 0 for d in dims[1:]):
        raise _NotAChain("a 2-D or 4-D input with known sizes")
    in_shape = [dims[2], dims[3], dims[1]] if len(dims) == 4 else [dims[1]]
    return inputs[0].name, len(dims), in_shape


def graph_layers(model, writer_names: dict, shapes: dict) -> tuple[list, dict, list]:
    """(layers, weights, input shape in Keras' channels-last order) for a chain graph,
    each node drafted by its op's handler (``_HANDLERS``); raises _NotAChain otherwise.
    ``shapes``: initializer name -> shape."""
    from wtransplant.reading.sources.onnxfile import node_scope

    g = model.graph
    inits = set(shapes)
    cur, rank, in_shape = _chain_input(g, inits)
    chain = _Chain(writer_names, shapes, rank)
    for node in g.node:
        data = [i for i in node.input if i and i not in inits]
        if node.op_type == "Constant":
            raise _NotAChain("constants in the graph")
        if data != [cur]:
            raise _NotAChain(f"{node.op_type} {node.name} does not follow the previous node")
        a = _attrs(node)
        _handler_for(node.op_type, chain.rank, a)(chain, node, a, node_scope(node.name))
        cur = node.output[0]
    if cur != g.output[0].name or not chain.weights:
        raise _NotAChain("the chain does not end at the output")
    return chain.layers, chain.weights, in_shape


def draft_from_graph(w, loaded, src):
    """Write the model, weights and verify hints of a chain graph into ``w`` (a draft
    writer holding the header lines) and return the Draft; None if the graph is not a
    chain of the ops this module reads (nothing written then)."""
    from wtransplant.planning.draft import Draft

    model = getattr(src, "model", None)
    names = getattr(src, "writer_names", None)
    if model is None or names is None:
        return None
    shapes = {t.path[1:]: tuple(t.shape) for t in loaded.tensors}
    try:
        layers, weights, in_shape = graph_layers(model, names(), shapes)
    except (_NotAChain, KeyError, IndexError, ValueError):
        return None
    w.line("model:")
    w.kv("  input_shape", in_shape, "from the ONNX graph's input (channels last)"
         if len(in_shape) == 3 else "from the ONNX graph's input")
    w.line("  layers:")
    for lay in layers:
        w.line("    - " + yaml.safe_dump(lay, default_flow_style=True, sort_keys=False,
                                         width=1 << 16).strip())
    w.line("weights:")
    for k, v in weights.items():
        w.kv(f"  {k}", v)
    layout = ", input_layout: nchw" if len(in_shape) == 3 else ""
    w.comment(f"verify: {{inputs: x.npy, expected: y.npy{layout}}}  # to check parity")
    w.comment("architecture read from the ONNX graph (padding, strides, pooling, "
              "activations, epsilon): nothing left to decide")
    return Draft(w.text(), True, notes=["architecture read from the ONNX graph"])
