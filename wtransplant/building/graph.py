"""Build a Keras functional model from a spec's ``model.layers`` (layer 2).

A stack (no ``inputs:`` keys) and a graph are built the same way: each item is called on
the outputs of the items it reads, in an order where inputs come first. The Keras model's
inputs carry the spec's input names (``input`` for ``input_shape``) and its outputs are
the named items (default: the last).

Spec-only item keys are translated here:

* an integer (or per-axis list of integers) ``padding`` on ``Conv1D/2D/3D`` (and depthwise
  convolutions): PyTorch's zero padding on both sides, built as ``ZeroPaddingND``
  (named ``<item>_pad``) + the convolution with ``padding='valid'``;
* ``padding: int``, ``ceil_mode``, ``count_include_pad`` on ``Max/AveragePooling1D/2D/3D``:
  stock Keras pooling (``'valid'``, after ``ZeroPaddingND`` for an average that counts
  pads) where that computes PyTorch's numbers for this input size, else wtransplant's
  :class:`~wtransplant.layers_custom.TorchPooling`. The notes say which was used.
"""

from __future__ import annotations

import keras

from wtransplant.errors import InputError, one_line
from wtransplant.planning.graphspec import (
    MERGE_CLASSES,
    check_graph,
    input_shapes,
    item_name,
    output_names,
)
from wtransplant.planning.spec import ModelSpec
from wtransplant.planning.torchgeom import extra_right, ints

CONV_CLASSES = {"Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                "SeparableConv1D", "SeparableConv2D"}
POOL_CLASSES = {"MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
                "AveragePooling2D", "AveragePooling3D"}


def _where(ms: ModelSpec, i: int) -> str:
    line = ms.layer_lines[i] if i < len(ms.layer_lines) else None
    return f"{ms.display}:{line}: model.layers[{i}]" if line else \
        f"{ms.display}: model.layers[{i}]"


def _nd(cls: str) -> int:
    return int(next(ch for ch in cls if ch.isdigit()))


def build_graph(ms: ModelSpec, name: str | None = None) -> tuple[keras.Model, list[str]]:
    """The Keras model of a ``layers`` spec and notes on translated items."""
    from wtransplant.building.keras_model import layer_from_dict

    order = check_graph(ms)
    notes: list[str] = []
    tensors: dict[str, object] = {}
    model_inputs = []
    for nm, shape in input_shapes(ms).items():
        t = keras.Input(shape=tuple(shape), dtype=ms.input_dtype, name=nm)
        tensors[nm] = t
        model_inputs.append(t)
    for node in order:
        i = node.index
        where = _where(ms, i)
        item = {k: v for k, v in node.item.items() if k != "inputs"}
        cls = item.get("class")
        label = item_name(i, node.item)
        xs = [tensors[s] for s in node.inputs]
        x = xs if cls in MERGE_CLASSES else xs[0]
        try:
            calls = _translate(item, cls, x, where, notes)
        except ValueError as e:
            raise InputError(f"{where} ({cls} {label!r}): {e}") from None
        y = x
        for d in calls:
            lay = layer_from_dict(d, where)
            try:
                y = lay(y)
            except Exception as e:
                shapes = ", ".join(str(tuple(t.shape)) for t in (y if isinstance(y, list)
                                                                  else [y]))
                raise InputError(
                    f"{where} ({cls} {label!r}) does not accept input of shape {shapes}"
                    f"{' from ' + ', '.join(node.inputs) if node.item.get('inputs') else ''}"
                    f": {one_line(e)}") from None
        tensors[label] = y
        if node.name is None:  # Keras chose a name: let later items use the index name
            tensors[label] = y
    notes = _summarise(notes)
    outs = [tensors[o] for o in output_names(ms)]
    # Keras names the model's outputs after the layers that produce them; an output that is
    # a model input needs a layer of its own
    for j, o in enumerate(outs):
        if any(o is t for t in model_inputs):
            outs[j] = keras.layers.Identity(name=f"{output_names(ms)[j]}_out")(o)
    try:
        model = keras.Model(model_inputs if len(model_inputs) > 1 else model_inputs[0],
                            outs if len(outs) > 1 else outs[0],
                            name=ms.name or name or "transplanted")
    except ValueError as e:
        raise InputError(f"{ms.display}: model: {one_line(e)}") from None
    return model, notes


def _summarise(notes: list[str], most: int = 3) -> list[str]:
    """One line for many items built the same way ("a: how" x N -> "how: a, b, ... (N)")."""
    by_how: dict[str, list[str]] = {}
    for n in notes:
        name, _, how = n.partition(": ")
        key = how.split(" built as ", 1)[-1] if " built as " in how else how
        by_how.setdefault(key, []).append(n)
    out = []
    for key, group in by_how.items():
        if len(group) <= most or " built as " not in group[0]:
            out.extend(group)
            continue
        names = [g.partition(": ")[0] for g in group]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        out.append(f"{len(names)} items with PyTorch padding built as {key}: {shown}")
    return out


def _translate(item: dict, cls: str, x, where: str, notes: list[str]) -> list[dict]:
    """One spec item -> the Keras layer dicts that compute it (usually itself)."""
    for k in ("ceil_mode", "count_include_pad"):
        if k in item and cls not in POOL_CLASSES:
            raise ValueError(f"{k} applies to MaxPooling/AveragePooling layers only")
    pad = item.get("padding")
    int_pad = pad is not None and not isinstance(pad, str)
    if cls in CONV_CLASSES and int_pad:
        nd = _nd(cls)
        p = ints(pad, nd, "padding")
        conv = {**item, "padding": "valid"}
        if not any(p):
            return [conv]
        name = item.get("name")
        zp = _zero_padding(nd, p, name)
        notes.append(f"{name or cls}: PyTorch padding {list(p)} built as ZeroPadding{nd}D + "
                     f"{cls}(padding='valid') (stock Keras layers)")
        return [zp, conv]
    if cls in POOL_CLASSES:
        return _pool(item, cls, x, notes)
    return [item]


def _zero_padding(nd: int, p, name: str | None) -> dict:
    """The ZeroPaddingND item that pads ``p`` on both sides of each axis (PyTorch's)."""
    zp = {"class": f"ZeroPadding{nd}D", "padding": [[v, v] for v in p] if nd > 1 else
          [p[0], p[0]]}
    if name:
        zp["name"] = f"{name}_pad"
    return zp


def _pool(item: dict, cls: str, x, notes: list[str]) -> list[dict]:
    nd = _nd(cls)
    ceil = item.get("ceil_mode", False)
    cip = item.get("count_include_pad", True)
    if not isinstance(ceil, bool) or not isinstance(cip, bool):
        raise ValueError("ceil_mode and count_include_pad are true or false")
    pad = item.get("padding", "valid")
    if isinstance(pad, str) and not ceil:
        if "count_include_pad" in item:
            raise ValueError("count_include_pad needs an integer padding")
        return [item]
    if isinstance(pad, str) and pad != "valid":
        raise ValueError(f"ceil_mode: true needs an integer padding (PyTorch's), not "
                         f"{pad!r}")
    p = (0,) * nd if isinstance(pad, str) else ints(pad, nd, "padding")
    k = ints(item.get("pool_size", 2), nd, "pool_size")
    s = item.get("strides")
    s = k if s is None else ints(s, nd, "strides")
    spatial = tuple(x.shape[1:1 + nd])
    if any(n is None for n in spatial):
        raise ValueError("PyTorch padding/ceil_mode on pooling needs static spatial sizes")
    if any(2 * pi > ki for pi, ki in zip(p, k)):
        raise ValueError(f"padding {list(p)} must be at most half of pool_size {list(k)} "
                         f"(PyTorch's rule)")
    try:
        extra = [extra_right(n, ki, si, pi, ceil) for n, ki, si, pi in zip(spatial, k, s, p)]
    except ValueError as e:
        raise ValueError(f"input {spatial}: {e}") from None
    name = item.get("name")
    base = {kk: v for kk, v in item.items() if kk not in ("ceil_mode", "count_include_pad",
                                                            "padding", "strides",
                                                            "pool_size")}
    stock = {**base, "pool_size": list(k), "strides": list(s), "padding": "valid"}
    mode = "max" if cls.startswith("Max") else "avg"
    if not any(extra) and not any(p):
        if ceil:
            notes.append(f"{name or cls}: ceil_mode gives the same windows as floor at input "
                         f"{list(spatial)}: stock {cls}(padding='valid')")
        return [stock]
    if not any(extra) and mode == "avg" and cip:
        zp = _zero_padding(nd, p, name)
        notes.append(f"{name or cls}: PyTorch AvgPool padding {list(p)} "
                     f"(count_include_pad=True) built as ZeroPadding{nd}D + {cls}('valid') "
                     f"(stock Keras layers)")
        return [zp, stock]
    why = []
    if any(p):
        why.append(f"padding {list(p)}" + (" (padded positions never win)" if mode == "max"
                                           else ""))
    if any(extra):
        why.append(f"ceil_mode (last window clipped at the input's end, input "
                   f"{list(spatial)})")
    if mode == "avg" and not cip:
        why.append("count_include_pad=False")
    notes.append(f"{name or cls}: PyTorch {'MaxPool' if mode == 'max' else 'AvgPool'}{nd}d "
                 f"with {', '.join(why)}: wtransplant TorchPooling layer (stock Keras pooling "
                 f"cannot compute it)")
    custom = {"class": "TorchPooling", "mode": mode, "pool_size": list(k), "strides": list(s),
              "padding": list(p), "ceil_mode": ceil, "count_include_pad": cip}
    for kk in ("name", "dtype", "trainable"):
        if kk in item:
            custom[kk] = item[kk]
    unknown = set(base) - {"class", "name", "dtype", "trainable", "data_format"}
    if unknown:
        raise ValueError(f"unexpected arguments {sorted(unknown)} with PyTorch-style pooling")
    if base.get("data_format") not in (None, "channels_last"):
        raise ValueError("PyTorch-style pooling is built channels-last")
    return [custom]
