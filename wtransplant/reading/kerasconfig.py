"""The architecture a Keras 2 full-model file states in its ``model_config`` (layer 1: JSON
and the file's own tensors only; never Keras).

``inspect`` and the draft show this instead of guessing from shapes: one row per layer,
like ``model.summary()``: name, class, the settings that define it, one sample's output
shape (worked out from the config, ``None`` where it cannot be), parameters (counted from the
file's tensors) and inbound layers (from the config's ``inbound_nodes``; a
Sequential's layers read the one before). The config is data: it is parsed, never run.
"""

from __future__ import annotations

import json
import math

#: config keys worth showing per layer (the rest are initialisers, regularisers...)
SHOWN = ("units", "filters", "kernel_size", "strides", "padding", "pool_size",
         "activation", "depth_multiplier", "rate", "axis", "epsilon", "dims", "target_shape",
         "return_sequences", "size", "cropping", "alpha", "shared_axes")
MAX_LAYERS = 5000


def _inbound(entry) -> list[str]:
    out: list[str] = []
    nodes = entry.get("inbound_nodes") or []
    if not nodes:
        return out
    node = nodes[0]
    if isinstance(node, dict):  # Keras 3 style
        stack = [node.get("args")]
        while stack:
            o = stack.pop()
            if isinstance(o, dict):
                h = (o.get("config") or {}).get("keras_history")
                if o.get("class_name") == "__keras_tensor__" and h:
                    out.append(str(h[0]))
                else:
                    stack.extend(o.values())
            elif isinstance(o, list):
                stack.extend(reversed(o))
        return out
    if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        for inb in node:
            if isinstance(inb, list) and inb and isinstance(inb[0], str):
                out.append(inb[0])
    return out


def summarize(config_text, tensors=()) -> dict | None:
    """Rows describing the model in ``config_text`` (the ``model_config`` attribute), or
    None if it is not a model config. ``tensors``: the file's SourceTensors (for counts)."""
    try:
        cfg = json.loads(config_text) if isinstance(config_text, str | bytes) else config_text
    except (TypeError, ValueError):
        return None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("config"), dict):
        return None
    layers = cfg["config"].get("layers")
    if not isinstance(layers, list):
        return None
    params: dict[str, int] = {}
    for t in tensors:
        head = str(t.name).split("/", 1)[0]
        params[head] = params.get(head, 0) + int(math.prod(t.shape))
    from wtransplant.planning.shapes import output_shape

    rows = []
    prev = None
    sequential = cfg.get("class_name") == "Sequential"
    shapes: dict[str, tuple | None] = {}
    for entry in layers[:MAX_LAYERS]:
        if not isinstance(entry, dict):
            continue
        c = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = str(entry.get("name") or c.get("name") or "?")
        cls = str(entry.get("class_name") or "?")
        args = {k: c[k] for k in SHOWN if k in c and c[k] not in (None, "linear")}
        if cls == "InputLayer":
            shape = c.get("batch_input_shape") or c.get("batch_shape")
            if shape:
                args["shape"] = list(shape)[1:]
        inner = c.get("layer")
        if isinstance(inner, dict) and inner.get("class_name"):
            args["layer"] = inner.get("class_name")
        ins = _inbound(entry)
        if not ins and sequential and prev is not None:
            ins = [prev]
        in_shapes = [shapes.get(n) for n in ins]
        first = c.get("batch_input_shape") or c.get("batch_shape")
        if not ins and cls != "InputLayer" and isinstance(first, list | tuple) and first:
            in_shapes = [tuple(first[1:])]  # a Sequential's first layer states the input
        out = output_shape(cls, c, in_shapes)
        shapes[name] = out
        rows.append({"name": name, "class": cls, "args": args,
                     "output_shape": None if out is None else list(out),
                     "parameters": params.get(name, 0), "inbound": ins})
        prev = name
    outs = cfg["config"].get("output_layers")
    outputs = []
    if isinstance(outs, list):
        for o in outs:
            if isinstance(o, list) and o and isinstance(o[0], str):
                outputs.append(o[0])
    elif rows:
        outputs = [rows[-1]["name"]]
    return {"from": "model_config", "class": str(cfg.get("class_name")), "layers": rows,
            "outputs": outputs, "truncated": len(layers) > MAX_LAYERS,
            "parameters": sum(r["parameters"] for r in rows)}
