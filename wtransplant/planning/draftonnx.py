"""Drafting from an ONNX graph: the model's nodes say what a state_dict cannot (padding,
strides, pooling, activations, a BatchNorm's epsilon).

For a chain of the ops below (what ``torch.onnx.export`` writes for a plain CNN or MLP),
the draft is read off the graph, every layer's weights mapped by their writer's-view
names, with nothing left undecided. Any other graph (branches, ops not listed, grouped
convolutions, asymmetric pooling...) returns None and the draft falls back to the one
drawn from the tensors alone (``draft._draft_layers``), exactly as for a state_dict.

Layer 1: reads the parsed ``onnx.ModelProto`` of an open
:class:`~wtransplant.reading.sources.onnxfile.OnnxSource`; no Keras.
"""

from __future__ import annotations

import re

import yaml

#: ops that rename nothing and compute nothing at inference
_SKIP = ("Identity", "Dropout")
_ACTS = {"Relu": {"class": "ReLU"}, "Sigmoid": {"class": "Activation", "activation": "sigmoid"},
         "Tanh": {"class": "Activation", "activation": "tanh"}}


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


def graph_layers(model, writer_names: dict, shapes: dict) -> tuple[list, dict, list]:
    """(layers, weights, input shape in Keras' channels-last order) for a chain graph;
    raises _NotAChain otherwise. ``shapes``: initializer name -> shape."""
    from wtransplant.reading.sources.onnxfile import node_scope

    g = model.graph
    inits = set(shapes)
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise _NotAChain("one input and one output")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) not in (2, 4) or any(d is None or d <= 0 for d in dims[1:]):
        raise _NotAChain("a 2-D or 4-D input with known sizes")
    rank = len(dims)
    in_shape = [dims[2], dims[3], dims[1]] if rank == 4 else [dims[1]]
    cur = inputs[0].name
    layers, weights, used = [], {}, set()

    def w(t: str) -> str:
        return writer_names.get(t, t)

    for node in g.node:
        data = [i for i in node.input if i and i not in inits]
        if node.op_type == "Constant":
            raise _NotAChain("constants in the graph")
        if data != [cur]:
            raise _NotAChain(f"{node.op_type} {node.name} does not follow the previous node")
        a = _attrs(node)
        scope = node_scope(node.name)
        op = node.op_type
        if op in _SKIP:
            cur = node.output[0]
            continue
        if op == "Conv" and rank == 4:
            wt = node.input[1]
            o, _i, kh, kw = shapes[wt]
            if a.get("group", 1) != 1 or a.get("auto_pad", "NOTSET") != "NOTSET" or \
                    any(d != 1 for d in a.get("dilations", [1, 1])):
                raise _NotAChain("grouped, dilated or auto-padded convolution")
            strides = a.get("strides", [1, 1])
            pads = a.get("pads", [0, 0, 0, 0])
            name = _name(scope, op, used)
            if any(pads) and not (strides == [1, 1] and kh % 2 and kw % 2 and
                                  pads == [kh // 2, kw // 2, kh // 2, kw // 2]):
                layers.append({"class": "ZeroPadding2D", "name": name + "_pad",
                               "padding": [[pads[0], pads[2]], [pads[1], pads[3]]]})
                padding = "valid"
            else:
                padding = "same" if any(pads) else "valid"
            lay = {"class": "Conv2D", "name": name, "filters": o, "kernel_size": [kh, kw],
                   "padding": padding}
            if strides != [1, 1]:
                lay["strides"] = strides
            weights[f"{name}/kernel"] = w(wt)
            if len(node.input) > 2 and node.input[2]:
                weights[f"{name}/bias"] = w(node.input[2])
            else:
                lay["use_bias"] = False
            layers.append(lay)
        elif op == "BatchNormalization":
            if a.get("training_mode", 0):
                raise _NotAChain("BatchNormalization in training mode")
            name = _name(scope, op, used)
            layers.append({"class": "BatchNormalization", "name": name,
                           "epsilon": a.get("epsilon", 1e-5),
                           "momentum": a.get("momentum", 0.9)})
            for var, i in (("gamma", 1), ("beta", 2), ("moving_mean", 3),
                           ("moving_variance", 4)):
                weights[f"{name}/{var}"] = w(node.input[i])
        elif op in _ACTS:
            layers.append({**_ACTS[op], "name": _name(scope or op, op, used)})
        elif op == "Softmax" and rank == 2 and a.get("axis", -1) in (-1, 1):
            layers.append({"class": "Softmax", "name": _name(scope or op, op, used)})
        elif op in ("MaxPool", "AveragePool") and rank == 4:
            if any(a.get("pads", [0])) or a.get("ceil_mode", 0) or \
                    a.get("auto_pad", "NOTSET") != "NOTSET":
                raise _NotAChain("padded or ceil-mode pooling")
            k = a["kernel_shape"]
            layers.append({"class": "MaxPooling2D" if op == "MaxPool" else "AveragePooling2D",
                           "name": _name(scope, op, used), "pool_size": k,
                           "strides": a.get("strides", k)})
        elif op == "GlobalAveragePool" and rank == 4:
            layers.append({"class": "GlobalAveragePooling2D", "name": _name(scope, op, used),
                           "keepdims": True})
        elif op == "Flatten" and a.get("axis", 1) == 1:
            if rank != 2:
                layers.append({"class": "Flatten", "name": _name(scope or "flatten", op,
                                                                 used)})
            rank = 2
        elif op == "Gemm" and rank == 2:
            if a.get("transA", 0) or not a.get("transB", 0) or a.get("alpha", 1.0) != 1.0 \
                    or a.get("beta", 1.0) != 1.0:
                raise _NotAChain("a Gemm other than x W^T + b")
            wt = node.input[1]
            name = _name(scope, op, used)
            lay = {"class": "Dense", "name": name, "units": shapes[wt][0]}
            weights[f"{name}/kernel"] = w(wt)
            if len(node.input) > 2 and node.input[2]:
                weights[f"{name}/bias"] = w(node.input[2])
            else:
                lay["use_bias"] = False
            layers.append(lay)
        else:
            raise _NotAChain(f"op {op}")
        cur = node.output[0]
    if cur != g.output[0].name or not weights:
        raise _NotAChain("the chain does not end at the output")
    return layers, weights, in_shape


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
