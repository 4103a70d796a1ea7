"""Layer 1 (standard library only): one sample's shapes through Keras layers, without Keras.

:func:`layer_shapes` gives a spec layer's output shape and its variables' shapes (what the
settler tries tensors against); :func:`output_shape` extends it to what a Keras model config
states (input layers, merges, Reshape, Permute) for ``inspect``'s architecture table. Shapes
are channels last and leave out the batch axis; an unknown size is ``None``.
"""

from __future__ import annotations

import math


class NotCovered(Exception):
    """The reference cannot evaluate this model; the message says which layer and why."""


PASS_THROUGH = {"Dropout", "AlphaDropout", "GaussianDropout", "GaussianNoise", "Activation",
                "ReLU", "ELU", "LeakyReLU", "Softmax", "Identity", "ActivityRegularization",
                "SpatialDropout1D", "SpatialDropout2D"}


class ShapeMismatch(Exception):
    pass


def per_axis(v, n):
    """A size for each of ``n`` axes: an int (or a list of one) repeated, a list as is."""
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    return v * n if len(v) == 1 else v


def int_padding(pad) -> bool:
    """An integer (or per-axis list of integers) padding: PyTorch's, on both sides."""
    return (isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0) or (
        isinstance(pad, list | tuple) and bool(pad) and all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pad))


def layer_shapes(d: dict, shape: tuple) -> tuple[tuple, list[tuple[str, tuple]]]:
    """(output shape, [(variable, shape)...]) of a spec layer on one sample of ``shape``."""
    cls = d["class"]
    if cls == "Dense":
        n = int(d["units"])
        vs = [("kernel", (shape[-1], n))]
        if d.get("use_bias", True):
            vs.append(("bias", (n,)))
        return (*shape[:-1], n), vs
    if cls in ("Conv1D", "Conv2D", "Conv3D"):
        nd = int(cls[4])
        if len(shape) != nd + 1:
            raise ShapeMismatch(f"{cls} on a {len(shape)}-D sample")
        k = per_axis(d["kernel_size"], nd)
        s = per_axis(d.get("strides", 1), nd)
        dil = per_axis(d.get("dilation_rate", 1), nd)
        pad = d.get("padding", "valid")
        out = []
        for i in range(nd):
            eff = (k[i] - 1) * dil[i] + 1
            if pad == "same":
                out.append(-(-shape[i] // s[i]))
            elif pad == "valid":
                out.append((shape[i] - eff) // s[i] + 1)
            elif int_padding(pad):  # PyTorch's zero padding on both sides (spec extension)
                out.append((shape[i] + 2 * per_axis(pad, nd)[i] - eff) // s[i] + 1)
            else:
                raise NotCovered(f"padding {pad!r}")
            if out[-1] <= 0:
                raise ShapeMismatch("map too small")
        f = int(d["filters"])
        g = int(d.get("groups", 1))
        vs = [("kernel", (*k, shape[-1] // g, f))]
        if d.get("use_bias", True):
            vs.append(("bias", (f,)))
        return (*out, f), vs
    if cls == "BatchNormalization":
        c = (shape[-1],)
        vs = ([("gamma", c)] if d.get("scale", True) else []) + \
             ([("beta", c)] if d.get("center", True) else []) + \
             [("moving_mean", c), ("moving_variance", c)]
        return shape, vs
    if cls == "LayerNormalization":
        c = (shape[-1],)
        vs = ([("gamma", c)] if d.get("scale", True) else []) + \
             ([("beta", c)] if d.get("center", True) else [])
        return shape, vs
    if cls == "Flatten":
        return (math.prod(shape),), []
    if cls in ("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"):
        nd = int(cls[-2])
        p = per_axis(d.get("pool_size", 2), nd)
        s = per_axis(d.get("strides") or p, nd)
        pad = d.get("padding", "valid")
        out = [(-(-shape[i] // s[i])) if pad == "same" else (shape[i] - p[i]) // s[i] + 1
               for i in range(nd)]
        if any(o <= 0 for o in out):
            raise ShapeMismatch("map too small")
        return (*out, shape[-1]), []
    if cls.startswith("Global") and cls[-2:] in ("1D", "2D"):
        return (shape[-1],), []
    if cls in PASS_THROUGH:
        return shape, []
    if cls in ("SimpleRNN", "GRU", "LSTM"):
        u = int(d["units"])
        g = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[cls]
        vs = [("kernel", (shape[-1], g * u)), ("recurrent_kernel", (u, g * u))]
        if d.get("use_bias", True):
            two = cls == "GRU" and d.get("reset_after", True)
            vs.append(("bias", (2, g * u) if two else (g * u,)))
        out = (shape[0], u) if d.get("return_sequences") else (u,)
        return out, vs
    raise NotCovered(f"{cls} layers are not covered by the settler")


MERGES = {"Add", "Multiply", "Average", "Subtract", "Maximum", "Minimum"}


def output_shape(cls: str, config: dict, in_shapes: list[tuple | None]) -> tuple | None:
    """One sample's output shape of a layer of a Keras model config, or None where it
    cannot be told (an unknown input size, a layer class not covered here)."""
    if cls == "InputLayer":
        shape = config.get("batch_input_shape") or config.get("batch_shape")
        return tuple(shape[1:]) if isinstance(shape, list | tuple) and shape else None
    if not in_shapes or any(s is None for s in in_shapes) or \
            config.get("data_format") == "channels_first":
        return None
    first = tuple(in_shapes[0])
    if cls in MERGES:
        return first
    if cls == "Concatenate":
        axis = config.get("axis", -1)
        axis = axis - 1 if isinstance(axis, int) and axis > 0 else axis  # no batch axis
        try:
            total = sum(s[axis] for s in in_shapes)
            out = list(first)
            out[axis] = total
            return tuple(out)
        except (IndexError, TypeError):
            return None
    if cls == "Reshape" and isinstance(config.get("target_shape"), list | tuple):
        t = list(config["target_shape"])
        if t.count(-1) == 1 and None not in first:
            known = math.prod(d for d in t if d != -1)
            t[t.index(-1)] = math.prod(first) // known if known else None
        return tuple(t)
    if cls == "Permute" and isinstance(config.get("dims"), list | tuple):
        try:
            return tuple(first[d - 1] for d in config["dims"])
        except (IndexError, TypeError):
            return None
    try:
        return _other_shape(cls, config, first)
    except (NotCovered, ShapeMismatch, KeyError, TypeError, ValueError, IndexError):
        return None


def _other_shape(cls: str, c: dict, first: tuple) -> tuple:
    nd = int(cls[-2]) if cls[-2:-1].isdigit() and cls.endswith("D") else 0
    if cls.startswith(("SeparableConv", "DepthwiseConv")):
        filters = c["filters"] if cls.startswith("Separable") else \
            first[-1] * int(c.get("depth_multiplier", 1))
        conv = {k: c[k] for k in ("kernel_size", "strides", "padding", "dilation_rate")
                if k in c}
        return tuple(layer_shapes({"class": f"Conv{nd}D", "filters": filters, **conv},
                                  first)[0])
    if cls.startswith("ZeroPadding"):
        p = c.get("padding", 1)
        pads = [(x, x) if isinstance(x, int) else tuple(x) for x in
                (per_axis(p, nd) if isinstance(p, int) else p)]
        return (*(d + a + b for d, (a, b) in zip(first, pads)), first[-1])
    if cls.startswith("UpSampling"):
        size = per_axis(c.get("size", 2), nd)
        return (*(d * k for d, k in zip(first, size)), first[-1])
    if cls == "Bidirectional" and isinstance(c.get("layer"), dict):
        inner = c["layer"]
        out = layer_shapes({"class": inner.get("class_name"), **(inner.get("config") or {})},
                           first)[0]
        return (*out[:-1], out[-1] * 2) if c.get("merge_mode", "concat") == "concat" else out
    return tuple(layer_shapes({"class": cls, **c}, first)[0])
