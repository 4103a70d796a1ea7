"""One entry per Keras layer type: roles, recipes, checks, recognizer.

Rules follow ``LAYOUTS.md`` (checked against keras-hub, transformers, nobuco, onnx2tf):

* torch Linear (out,in) -> Dense (in,out): transpose; after a Flatten of an NCHW map the
  kernel rows are permuted C,H,W -> H,W,C.
* torch ConvNd (out,in/g,k...) -> (k...,in/g,out); depthwise (C*m,1,kh,kw) ->
  (kh,kw,C,m); ConvTranspose (in,out/g,k...) -> (k...,out,in).
* torch GRU gates r,z,n -> Keras z,r,h; bias_ih/bias_hh stacked (reset_after=True only).
  torch LSTM gates i,f,g,o = Keras i,f,c,o; biases summed.
* MATLAB/Octave: arrays arrive in MATLAB's own view (axes already reversed); dense weights
  are out-by-in; a flatten is column-major.
* plain: orientation from shape; a square matrix is an error without an explicit transpose.

Each entry holds one method per (aspect, convention): ``recipe_torch``,
``checks_torch``, ``recognize_keras``... (signatures: the dispatchers in
:class:`~wtransplant.planning.layouts.base.LayerLayout`); ``<aspect>_any`` serves every
convention, and a convention without a method of its own uses its parent's (see
:mod:`wtransplant.planning.layouts.conventions`). A convention with no method at all for an
entry's recipe is "not supported" for that layer type, said in one line.

Adding a layer type: write one class here, decorate it with ``@register`` and give it a
method per convention it supports. Adding a convention: register it in ``conventions.py``
and write its methods where it differs from its parent.
"""

from __future__ import annotations

import math

from wtransplant.errors import MappingError
from wtransplant.planning.layouts.base import (
    DraftGuess,
    LayerLayout,
    Proposal,
    TargetLayer,
    TargetVar,
    Unit,
    mismatch,
    single,
)
from wtransplant.planning.layouts.ops import (
    BroadcastTo,
    GateReorder,
    Op,
    Reshape,
    Shape,
    Stack,
    Sum,
    Transpose,
)

REGISTRY: dict[str, LayerLayout] = {}


def register(cls):
    inst = cls()
    for name in cls.classes:
        REGISTRY[name] = inst
    return cls


def layout_for(class_name: str) -> LayerLayout | None:
    return REGISTRY.get(class_name)


# --------------------------------------------------------------------------------------
# shared small recipes


def undecided(candidates: list, why: str | None = None) -> dict:
    """A guess, as a spec writes it: ``{undecided: [...], why: ...}``."""
    d: dict = {"undecided": list(candidates)}
    if why:
        d["why"] = why
    return d


def vector(shapes: list[Shape], target: TargetVar) -> list[Op]:
    """A 1-D variable from one source stored as (n,), (n,1), (1,n), (1,1,n)..."""
    single(shapes, target)
    s = tuple(shapes[0])
    if s == tuple(target.shape):
        return []
    if math.prod(s) == math.prod(target.shape) and max(s, default=1) == math.prod(s) \
            and len(target.shape) == 1:
        return [Reshape(tuple(target.shape), why=f"{s} vector")]
    raise mismatch(target, shapes)


def check_recipe(ops: list[Op], shapes, target: TargetVar, why: str = "") -> list[Op]:
    """``ops`` if they take the stored ``shapes`` to the target's shape; else a mismatch
    error naming the target, the shapes and ``why``."""
    from wtransplant.planning.layouts.ops import OpShapeError, run_shapes

    try:
        out = run_shapes(ops, [tuple(s) for s in shapes])
    except OpShapeError as e:
        raise mismatch(target, shapes, str(e)) from None
    if len(out) != 1 or tuple(out[0]) != tuple(target.shape):
        raise mismatch(target, shapes, why)
    return ops


def conv_from_torch_axes(rank: int) -> tuple:
    """(out, in, k1..kn) -> (k1..kn, in, out); ConvTranspose (in, out, k..) -> (k.., out, in)."""
    return tuple(range(2, rank)) + (1, 0)


def plain_orientation(shapes, target: TargetVar, alt: tuple, alt_ops: list[Op],
                      what: str) -> list[Op]:
    """``plain``: the stored array is either already in Keras' layout or in ``alt`` (which
    ``alt_ops`` converts); the shape must tell which."""
    single(shapes, target)
    s = tuple(shapes[0])
    keras_fit = s == tuple(target.shape)
    alt_fit = s == tuple(alt)
    if keras_fit and alt_fit:
        raise MappingError(
            f"{target.key}: {what} of shape {s} could be stored either way (square); the "
            f"plain convention cannot tell. Say `transpose: [1, 0]` in the spec's weights "
            f"entry if it is stored out-by-in, or `transpose: [0, 1]` if it is already in "
            f"Keras' (in, out) order")
    if keras_fit:
        return []
    if alt_fit:
        return alt_ops
    raise mismatch(target, shapes, f"expected {tuple(target.shape)} (Keras order) or "
                                   f"{tuple(alt)} (the other order)")


def flatten_rows(layer: TargetLayer, n_in: int, n_out: int) -> list[Op]:
    """Reorder a Dense kernel's rows when its input is a Flatten of a feature map the source
    flattened channels-first (PyTorch: C,H,W) or column-major (MATLAB), since Keras flattens
    H,W,C. ``layer.flatten_order`` says which (the plan sets it from the convention)."""
    fm = layer.flatten_from
    order = layer.flatten_order
    if not fm or not order or len(fm) < 2 or math.prod(fm) != n_in:
        return []
    *spatial, c = fm
    k = len(spatial)
    if order == "chw":
        # rows are in (C, *spatial) order: reshape, move C last
        return [Reshape((c, *spatial, n_out), why=f"rows as C,{','.join('HWD'[:k])} of "
                                                    f"the flattened NCHW map"),
                Transpose(tuple(range(1, k + 1)) + (0, k + 1), why="to Keras' H,W,C order"),
                Reshape((n_in, n_out))]
    if order == "whc" and k == 2:
        # rows in (W, H, C) order: a flatten of the map with its spatial axes swapped
        h, w_ = spatial
        return [Reshape((w_, h, c, n_out), why="rows as W,H,C of the flattened map"),
                Transpose((1, 0, 2, 3), why="to Keras' H,W,C order"),
                Reshape((n_in, n_out))]
    if order == "fortran":
        # column-major flatten of (spatial..., C): the first spatial axis varies fastest
        rev = (c, *reversed(spatial))
        return [Reshape((*rev, n_out), why="rows in MATLAB's column-major flatten order"),
                Transpose(tuple(range(k, -1, -1)) + (k + 1,), why="to Keras' row-major "
                                                                   "H,W,C order"),
                Reshape((n_in, n_out))]
    return []


# --------------------------------------------------------------------------------------
# Dense


@register
class DenseLayout(LayerLayout):
    classes = ("Dense",)
    roles = {"keras": {"kernel": ("kernel",), "bias": ("bias",)},
             "*": {"kernel": ("weight",), "bias": ("bias",)}}

    def recipe_keras(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        return check_recipe([], shapes, target)

    def _out_in(self, src: str, shapes, layer, target):
        single(shapes, target)
        n_in, n_out = target.shape
        ops = [Transpose((1, 0), why=f"{src} weight is (out,in); Keras kernel is (in,out)")]
        ops += flatten_rows(layer, n_in, n_out)
        return check_recipe(ops, shapes, target)

    def recipe_torch(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        return self._out_in("PyTorch Linear", shapes, layer, target)

    def recipe_matlab(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        return self._out_in("MATLAB dense", shapes, layer, target)

    def recipe_plain(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        n_in, n_out = target.shape
        return plain_orientation(shapes, target, (n_out, n_in),
                                 [Transpose((1, 0), why="stored (out,in)")], "dense kernel")

    def _recognize(self, unit, role: str, what: str, out_in: bool, torch: bool = False):
        t = unit.tensors.get(role)
        if t is None or len(t.shape) != 2 or any(
                r not in ("weight", "bias", "kernel") for r in unit.tensors):
            return None
        w = t.shape
        n_in, n_out = (w[1], w[0]) if out_in else w
        b = unit.shape("bias")
        slots = {"kernel": [t.name]}
        if b is not None:
            slots["bias"] = [unit.tensors["bias"].name]
        args = {"units": n_out}
        if b is None:
            args["use_bias"] = False
        decide = ["activation"]
        if b is None and torch:
            decide.append(f"no bias: this may be an Embedding({n_out}, {n_in}) rather than a "
                          f"Linear without bias")
        return Proposal("Dense", args, slots, f"{what} {n_in} -> {n_out}", n_in, n_out,
                        decide=decide, kind="dense")

    def recognize_keras(self, unit, convention):
        return self._recognize(unit, "kernel", "Dense", out_in=False)

    def recognize_torch(self, unit, convention):
        return self._recognize(unit, "weight", "Linear", out_in=True, torch=True)

    def recognize_matlab(self, unit, convention):
        return self._recognize(unit, "weight", "dense (out-by-in)", out_in=True)

    #: plain: the orientation is decided by the chain (hints), not by one unit
    recognize_plain = None


# --------------------------------------------------------------------------------------
# Convolutions


@register
class ConvLayout(LayerLayout):
    classes = ("Conv1D", "Conv2D", "Conv3D")
    roles = {"keras": {"kernel": ("kernel",), "bias": ("bias",)},
             "*": {"kernel": ("weight",), "bias": ("bias",)}}
    #: the same axis move serves ConvTranspose, whose PyTorch weight is (in,out/groups,k...)
    torch_why = "PyTorch (out,in/groups,k...) -> Keras (k...,in/groups,out)"

    def recipe_torch(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        rank = len(target.shape)
        return check_recipe([Transpose(conv_from_torch_axes(rank), why=self.torch_why)], shapes,
                      target)

    def recipe_keras(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        return check_recipe([], shapes, target)

    #: MATLAB's own view of a conv weight is (k..., in, out): Keras' order already
    recipe_matlab = recipe_keras

    def recipe_plain(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        rank = len(target.shape)
        axes = conv_from_torch_axes(rank)
        inv = tuple(sorted(range(rank), key=lambda i: axes[i]))
        alt = tuple(target.shape[i] for i in inv)
        return plain_orientation(shapes, target, alt, [Transpose(axes, why="stored "
                                                                 "(out,in,k...)")],
                                 "conv kernel")

    def checks_torch(self, layer, convention):
        out = []
        cfg = layer.config
        strides = cfg.get("strides", 1)
        strides = strides if isinstance(strides, list | tuple) else [strides]
        if cfg.get("padding") == "same" and max(strides) > 1:
            out.append(f"{layer.name}: padding='same' with strides {tuple(strides)}: Keras pads "
                       f"bottom/right only, PyTorch's padding=k//2 pads both sides; use "
                       f"ZeroPadding before the conv and padding='valid' to match PyTorch")
        return out

    def _recognize(self, unit, role: str, torch: bool):
        w = unit.shape(role)
        if w is None or not 3 <= len(w) <= 5 or set(unit.tensors) - {role, "bias"}:
            return None
        nd = len(w) - 2
        if torch:
            out_c, in_g, *k = w
        else:  # keras / MATLAB view: (k..., in, out)
            *k, in_g, out_c = w
        cls = f"Conv{nd}D"
        args = {"filters": out_c, "kernel_size": list(k)}
        slots = {"kernel": [unit.tensors[role].name]}
        if "bias" in unit.tensors:
            slots["bias"] = [unit.tensors["bias"].name]
        else:
            args["use_bias"] = False
        decide = ["padding", "strides", "activation"]
        summary = f"Conv{nd}d {in_g} -> {out_c}, kernel {'x'.join(map(str, k))}"
        if torch and in_g == 1 and nd == 2:
            decide.append("groups: a (C*m,1,k,k) weight is also a depthwise conv "
                          "(DepthwiseConv2D) if the module had groups=C")
        if torch:
            decide.append("groups (in_channels = weight.shape[1] * groups) and whether "
                          "this is a ConvTranspose (its weight is (in,out,k...))")
        return Proposal(cls, args, slots, summary, in_g, out_c, decide=decide,
                        kind=f"conv{nd}d")

    def recognize_torch(self, unit, convention):
        return self._recognize(unit, "weight", torch=True)

    def recognize_keras(self, unit, convention):
        return self._recognize(unit, "kernel", torch=False)

    def recognize_matlab(self, unit, convention):
        return self._recognize(unit, "weight", torch=False)

    recognize_plain = recognize_matlab

    def draft_guesses_any(self, convention, p, args, *, int_padding: bool = False):
        """padding, strides and activation: the weights fix none of them."""
        out: dict = {}
        if "padding" not in args:
            ks = args.get("kernel_size")
            kk = ks if isinstance(ks, int) else (
                ks[0] if isinstance(ks, list | tuple) and len(set(ks)) == 1 else None)
            odd = int_padding and isinstance(kk, int) and kk > 1 and kk % 2
            out["padding"] = undecided(["same", "valid"] + ([kk // 2] if odd else []),
                                       "the weights do not fix it")
        if "strides" not in args:
            out["strides"] = undecided([1, 2], "the weights do not fix it; a pooling layer "
                                               "after this one, if the source has one, must "
                                               "be added by hand")
        if "activation" not in args:
            out["activation"] = undecided(["relu", "linear"], "the weights do not record "
                                          "activations; after a BatchNormalization it "
                                          "belongs in an Activation layer after that")
        return DraftGuess(out, f"{', '.join(out)}; pooling after it?" if out else "")

    def draft_guesses_torch(self, convention, p, args):
        # PyTorch's integer padding (both sides) is not Keras' same at stride 2
        return self.draft_guesses_any(convention, p, args, int_padding=True)


@register
class ConvTransposeLayout(ConvLayout):
    classes = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
    torch_why = "PyTorch ConvTranspose (in,out/groups,k...) -> Keras (k...,out,in)"

    def checks_torch(self, layer, convention):
        if layer.config.get("padding") == "same":
            return [f"{layer.name}: PyTorch ConvTranspose padding p is Keras padding='valid' "
                    f"followed by Cropping(p), not padding='same'"]
        return []

    def recognize(self, unit, convention):
        return None  # indistinguishable from a conv by shape; ConvLayout says so


@register
class DepthwiseConvLayout(LayerLayout):
    """Keras 3 calls DepthwiseConv2D's variable ``kernel``; Keras 2 files call it
    ``depthwise_kernel`` (SeparableConv2D keeps ``depthwise_kernel`` in both)."""

    classes = ("DepthwiseConv1D", "DepthwiseConv2D")
    roles = {"keras": {"kernel": ("kernel|depthwise_kernel",),
                       "depthwise_kernel": ("depthwise_kernel|kernel",), "bias": ("bias",)},
             "*": {"kernel": ("weight",), "depthwise_kernel": ("weight",), "bias": ("bias",)}}

    def recipe_torch(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        *k, c, m = target.shape
        nk = len(k)
        return check_recipe([Reshape((c, m, *k), why=f"PyTorch depthwise (C*m,1,k...) with "
                                               f"groups=C={c}, multiplier m={m}"),
                       Transpose(tuple(range(2, 2 + nk)) + (0, 1),
                                 why="-> Keras (k...,C,m)")], shapes, target)

    def recipe_keras(self, var, convention, shapes, layer, target):
        if var == "bias":
            return vector(shapes, target)
        single(shapes, target)
        return check_recipe([], shapes, target)

    recipe_matlab = recipe_plain = recipe_keras

    def recognize_keras(self, unit, convention):
        role = "depthwise_kernel" if "depthwise_kernel" in unit.tensors else None
        if role is None or "pointwise_kernel" in unit.tensors:
            return None
        *k, c, m = unit.shape(role)
        slots = {"kernel": [unit.tensors[role].name]}
        args = {"kernel_size": list(k), "depth_multiplier": m}
        if "bias" in unit.tensors:
            slots["bias"] = [unit.tensors["bias"].name]
        else:
            args["use_bias"] = False
        return Proposal(f"DepthwiseConv{len(k)}D", args, slots,
                        f"depthwise conv {c} channels x{m}, kernel {'x'.join(map(str, k))}",
                        c, c * m, decide=["padding", "strides", "activation"],
                        kind="depthwise")


@register
class SeparableConvLayout(DepthwiseConvLayout):
    classes = ("SeparableConv1D", "SeparableConv2D")
    roles = {"keras": {"depthwise_kernel": ("depthwise_kernel",),
                       "pointwise_kernel": ("pointwise_kernel",), "bias": ("bias",)},
             "*": {"depthwise_kernel": ("depthwise.weight",),
                   "pointwise_kernel": ("pointwise.weight",), "bias": ("pointwise.bias",)}}

    def recipe_torch(self, var, convention, shapes, layer, target):
        if var == "pointwise_kernel":
            single(shapes, target)
            rank = len(target.shape)
            return check_recipe([Transpose(conv_from_torch_axes(rank),
                                     why="PyTorch 1x1 conv (out,C*m,1,1) -> Keras "
                                         "(1,1,C*m,out)")], shapes, target)
        return super().recipe_torch(var, convention, shapes, layer, target)

    # keras, matlab, plain: DepthwiseConvLayout's (every variable already in Keras' order)

    def recognize(self, unit, convention):
        return None


# --------------------------------------------------------------------------------------
# Normalization, embedding


@register
class BatchNormLayout(LayerLayout):
    classes = ("BatchNormalization",)
    roles = {"keras": {"gamma": ("gamma",), "beta": ("beta",), "moving_mean": ("moving_mean",),
                       "moving_variance": ("moving_variance",)},
             "torch": {"gamma": ("weight",), "beta": ("bias",),
                       "moving_mean": ("running_mean",), "moving_variance": ("running_var",)},
             "*": {"gamma": ("scale|gamma|weight",), "beta": ("offset|beta|bias",),
                   "moving_mean": ("trainedmean|mean|moving_mean",),
                   "moving_variance": ("trainedvariance|variance|moving_variance",)}}
    ignored_roles = {"torch": ("num_batches_tracked",)}

    def recipe_any(self, var, convention, shapes, layer, target):
        return vector(shapes, target)

    def checks_torch(self, layer, convention):
        out = []
        eps = layer.config.get("epsilon")
        mom = layer.config.get("momentum")
        if eps is not None and abs(eps - 1e-3) < 1e-12:
            out.append(f"{layer.name}: epsilon is Keras' default 0.001 but PyTorch BatchNorm's "
                       f"default is 1e-5; set epsilon: 1.0e-5 in the spec unless the source "
                       f"model used another value")
        if mom is not None and abs(mom - 0.99) < 1e-12:
            out.append(f"{layer.name}: momentum 0.99 (Keras' default) equals PyTorch momentum "
                       f"0.01; PyTorch's default 0.1 is Keras momentum 0.9 (matters only for "
                       f"fine-tuning)")
        return out

    def recognize_torch(self, unit, convention):
        t = unit.tensors
        if {"running_mean", "running_var"} <= set(t):
            n = unit.shape("running_mean")[0]
            slots = {"moving_mean": [t["running_mean"].name],
                     "moving_variance": [t["running_var"].name]}
            args = {"epsilon": 1e-5, "momentum": 0.9}
            if "weight" in t:
                slots["gamma"] = [t["weight"].name]
            else:
                args["scale"] = False
            if "bias" in t:
                slots["beta"] = [t["bias"].name]
            else:
                args["center"] = False
            return Proposal("BatchNormalization", args, _order(slots, self), f"BatchNorm({n})",
                            n, n, decide=["epsilon (PyTorch default 1e-5 assumed)"],
                            kind="batchnorm")
        return None

    def recognize_keras(self, unit, convention):
        t = unit.tensors
        if {"moving_mean", "moving_variance"} <= set(t):
            n = unit.shape("moving_mean")[0]
            slots = {v: [t[v].name] for v in ("gamma", "beta", "moving_mean",
                                              "moving_variance") if v in t}
            return Proposal("BatchNormalization", {}, slots, f"BatchNormalization({n})", n, n,
                            decide=["epsilon"], kind="batchnorm")
        return None

    def draft_guesses_torch(self, convention, p, args):
        if "epsilon" not in args:
            return DraftGuess()
        return DraftGuess({"epsilon": undecided([args["epsilon"]], "PyTorch's default eps; "
                                                "the weights do not record the source "
                                                "model's")}, "epsilon")


def _order(slots: dict, layout: LayerLayout) -> dict:
    keys = list(layout.roles.get("keras", {}))
    return {k: slots[k] for k in keys if k in slots}


@register
class LayerNormLayout(LayerLayout):
    classes = ("LayerNormalization", "RMSNormalization")
    roles = {"keras": {"gamma": ("gamma",), "beta": ("beta",), "scale": ("scale",)},
             "*": {"gamma": ("weight",), "beta": ("bias",), "scale": ("weight",)}}

    def recipe_any(self, var, convention, shapes, layer, target):
        return vector(shapes, target)

    def checks_torch(self, layer, convention):
        eps = layer.config.get("epsilon")
        if eps is not None and abs(eps - 1e-3) < 1e-12:
            return [f"{layer.name}: epsilon is Keras' default 0.001 but PyTorch LayerNorm's "
                    f"default is 1e-5; set epsilon: 1.0e-5 in the spec"]
        return []

    def recognize_torch(self, unit, convention):
        t = unit.tensors
        if set(t) == {"weight", "bias"} \
                and len(unit.shape("weight")) == 1 and unit.shape("weight") == unit.shape(
                    "bias"):
            n = unit.shape("weight")[0]
            return Proposal("LayerNormalization", {"epsilon": 1e-5},
                            {"gamma": [t["weight"].name], "beta": [t["bias"].name]},
                            f"LayerNorm({n}) (or a BatchNorm without running statistics)", n,
                            n, decide=["epsilon (PyTorch default 1e-5 assumed)"],
                            kind="layernorm")
        return None


@register
class EmbeddingLayout(LayerLayout):
    classes = ("Embedding",)
    roles = {"keras": {"embeddings": ("embeddings",)}, "*": {"embeddings": ("weight",)}}

    def recipe_keras(self, var, convention, shapes, layer, target):
        single(shapes, target)
        return check_recipe([], shapes, target)

    recipe_torch = recipe_keras  # PyTorch's weight is (num, dim) too

    def recipe_plain(self, var, convention, shapes, layer, target):
        single(shapes, target)
        v, d = target.shape
        return plain_orientation(shapes, target, (d, v), [Transpose((1, 0), why="stored "
                                                                    "(dim, vocabulary)")],
                                 "embedding matrix")

    recipe_matlab = recipe_plain

    def recognize_keras(self, unit, convention):
        if set(unit.tensors) == {"embeddings"}:
            v, d = unit.shape("embeddings")
            return Proposal("Embedding", {"input_dim": v, "output_dim": d},
                            {"embeddings": [unit.tensors["embeddings"].name]},
                            f"Embedding({v}, {d})", None, d, kind="embedding")
        return None


# --------------------------------------------------------------------------------------
# PReLU


@register
class PReLULayout(LayerLayout):
    """PReLU slopes. Keras' ``alpha`` has the input's shape with ``shared_axes`` set to 1:
    (1,1,C) for a conv map with ``shared_axes: [1, 2]``, (C,) after a Dense. A source
    vector of C slopes (PyTorch ``weight`` (C,), MATLAB's ``Alpha``, a plain array) fills
    the channel axis and is repeated over the axes that are not shared; a single slope
    (PyTorch ``num_parameters=1``: shape (1,)) fills every position. Same rule under every
    convention: the slopes are a per-channel vector whichever framework wrote them."""

    classes = ("PReLU",)
    roles = {"keras": {"alpha": ("alpha",)}, "torch": {"alpha": ("weight",)},
             "*": {"alpha": ("alpha|weight|scale",)}}

    def recipe_keras(self, var, convention, shapes, layer, target):
        single(shapes, target)
        s, t = tuple(shapes[0]), tuple(target.shape)
        if s != t and math.prod(s) == math.prod(t):
            return check_recipe([Reshape(t, why="Keras alpha stored with another shape")], shapes,
                          target)
        return self.recipe_any(var, convention, shapes, layer, target)

    def recipe_any(self, var, convention, shapes, layer, target):
        single(shapes, target)
        s = tuple(shapes[0])
        t = tuple(target.shape)
        n = math.prod(s)
        if s == t:
            return []
        if n == math.prod(t) and (max(s, default=1) == n or n == 1):
            return check_recipe([Reshape(t, why=f"{n} slopes")], shapes, target)
        if n == 1:
            ones = (1,) * len(t)
            return check_recipe([Reshape(ones, why="one shared slope"),
                           BroadcastTo(t, why="fills every position")], shapes, target)
        if max(s, default=1) == n and n == t[-1]:
            lead = (1,) * (len(t) - 1) + (n,)
            return check_recipe([Reshape(lead, why=f"{n} slopes on the channel axis"),
                           BroadcastTo(t, why="repeated over the axes not in shared_axes")],
                          shapes, target)
        raise mismatch(target, shapes, f"PReLU slopes: expected {t[-1]} (one per channel) or "
                                       f"1 value")

    def recognize_keras(self, unit, convention):
        return self._recognize(unit, "alpha")

    def recognize_any(self, unit, convention):
        if "relu" not in unit.key.lower():
            return None  # a lone vector: only a name says it is a PReLU
        return self._recognize(unit, "weight")

    def _recognize(self, unit, role: str):
        t = unit.tensors
        if set(t) != {role} or len(unit.shape(role) or ()) != 1:
            return None
        n = unit.shape(role)[0]
        args = {} if n == 1 else {"shared_axes": [1, 2]}
        decide = ["shared_axes (conv map: [1, 2]; after a Dense: none)"] if n > 1 else \
            ["one slope shared by every position: shared_axes over all non-batch axes"]
        return Proposal("PReLU", args, {"alpha": [t[role].name]},
                        f"PReLU({n})", n if n > 1 else None, n if n > 1 else None,
                        decide=decide, kind="prelu")


# --------------------------------------------------------------------------------------
# Recurrent layers

GATES = {"GRU": 3, "LSTM": 4, "SimpleRNN": 1}
RNN_BY_GATES = {g: cls for cls, g in GATES.items()}


def rnn_class(gate_rows: int, hidden: int) -> tuple[str, int] | None:
    """(Keras class, gates) for a stack of gate_rows = gates * hidden, or None."""
    if hidden <= 0 or gate_rows % hidden:
        return None
    g = gate_rows // hidden
    return (RNN_BY_GATES[g], g) if g in RNN_BY_GATES else None


@register
class RecurrentLayout(LayerLayout):
    classes = ("SimpleRNN", "GRU", "LSTM")
    roles = {"keras": {"kernel": ("kernel",), "recurrent_kernel": ("recurrent_kernel",),
                       "bias": ("bias",)},
             "torch": {"kernel": ("weight_ih",), "recurrent_kernel": ("weight_hh",),
                       "bias": ("bias_ih", "bias_hh")},
             "*": {"kernel": ("weight|kernel|inputweights|input_weights",),
                   "recurrent_kernel": ("recurrentweights|recurrent_weights|recurrent_kernel",),
                   "bias": ("bias",)}}

    def recipe_keras(self, var, convention, shapes, layer, target):
        base = var.rsplit("/", 1)[-1]
        if len(shapes) == 2 and base == "bias":
            if len(target.shape) == 2:  # GRU reset_after=True keeps both
                return check_recipe([Stack(why="[input bias; recurrent bias] -> Keras bias "
                                         "(2, 3H)")], shapes, target)
            return check_recipe([Sum(why="input bias + recurrent bias")], shapes, target)
        return check_recipe([], shapes, target)

    recipe_matlab = recipe_plain = recipe_keras

    def recipe_torch(self, var, convention, shapes, layer, target):
        cls = layer.inner_class if layer.class_name == "Bidirectional" else layer.class_name
        cfg = (layer.inner_config or {}) if layer.class_name == "Bidirectional" else \
            layer.config
        base = var.rsplit("/", 1)[-1]
        gru = cls == "GRU"
        reorder = [GateReorder(0, (1, 0, 2), "r,z,n (PyTorch)", "z,r,h (Keras)")] if gru \
            else []
        if base in ("kernel", "recurrent_kernel"):
            single(shapes, target)
            note = "" if gru else (" (gate order i,f,g,o = Keras i,f,c,o: kept)"
                                   if cls == "LSTM" else "")
            return check_recipe(reorder + [Transpose((1, 0), why=f"PyTorch (gates*H, in) -> "
                                                            f"Keras (in, gates*H){note}")],
                          shapes, target)
        # bias
        if gru:
            if not cfg.get("reset_after", True):
                raise MappingError(
                    f"{target.key}: PyTorch's GRU applies the reset gate after the recurrent "
                    f"product (reset_after=True); a Keras GRU with reset_after=False computes "
                    f"a different function. Build the layer with reset_after: true")
            if len(shapes) == 2:
                return check_recipe(reorder + [Stack(why="[bias_ih; bias_hh] -> Keras bias (2, 3H)")],
                              shapes, target)
            if len(shapes) == 1 and len(shapes[0]) == 2:
                return check_recipe([GateReorder(1, (1, 0, 2), "r,z,n (PyTorch)", "z,r,h (Keras)")],
                              shapes, target)
            raise mismatch(target, shapes, "a PyTorch GRU needs bias_ih and bias_hh")
        if len(shapes) == 2:
            return check_recipe([Sum(why="PyTorch bias_ih + bias_hh -> Keras' single bias")],
                          shapes, target)
        return check_recipe([], shapes, target)

    def recognize_torch(self, unit, convention):
        t = unit.tensors
        if "weight_ih" in t and "weight_hh" in t:
            gh, n_in = unit.shape("weight_ih")
            ghh, h = unit.shape("weight_hh")
            found = rnn_class(gh, h) if ghh == gh else None
            if found is None:
                return None
            cls, g = found
            args = {"units": h}
            if cls == "GRU":
                args["reset_after"] = True
            bidir = "weight_ih_reverse" in t

            def slots(sfx=""):
                s = {"kernel": [t["weight_ih" + sfx].name],
                     "recurrent_kernel": [t["weight_hh" + sfx].name]}
                bs = [t[r + sfx].name for r in ("bias_ih", "bias_hh") if r + sfx in t]
                if bs:
                    s["bias"] = bs
                return s

            torch_name = {"GRU": "GRU", "LSTM": "LSTM", "SimpleRNN": "RNN"}[cls]
            summary = f"{torch_name} input {n_in}, hidden {h} ({g}x{h} = {gh} gate rows)"
            decide = ["return_sequences (True if another recurrent layer or a per-step "
                      "output follows)"]
            if cls == "SimpleRNN":
                decide.append("activation (PyTorch RNN: tanh or relu)")
            if bidir:
                sl = {f"forward/{k}": v for k, v in slots().items()}
                sl.update({f"backward/{k}": v for k, v in slots("_reverse").items()})
                return Proposal("Bidirectional", {"layer": {"class": cls, **args}}, sl,
                                "bidirectional " + summary, n_in, 2 * h, decide=decide,
                                kind=cls.lower())
            return Proposal(cls, args, slots(), summary, n_in, h, decide=decide,
                            kind=cls.lower())
        return None

    def recognize_keras(self, unit, convention):
        t = unit.tensors
        if {"kernel", "recurrent_kernel"} <= set(t):
            n_in, gh = unit.shape("kernel")
            found = rnn_class(gh, unit.shape("recurrent_kernel")[0])
            if found is None:
                return None
            cls, _ = found
            h = unit.shape("recurrent_kernel")[0]
            args = {"units": h}
            if cls == "GRU":
                args["reset_after"] = len(unit.shape("bias") or ()) == 2
            return Proposal(cls, args, {k: [v.name] for k, v in t.items()},
                            f"{cls} input {n_in}, units {h}", n_in, h, kind=cls.lower())
        return None


@register
class BidirectionalLayout(RecurrentLayout):
    classes = ("Bidirectional",)

    def source_roles_any(self, var, convention, layer):
        return self.roles_for(var.partition("/")[2], convention)

    def source_roles_torch(self, var, convention, layer):
        direction, _, base = var.partition("/")
        sfx = "_reverse" if direction == "backward" else ""
        return tuple("|".join(a + sfx for a in r.split("|"))
                     for r in self.roles_for(base, convention))

    def source_roles_keras(self, var, convention, layer):
        direction, _, base = var.partition("/")
        return tuple("|".join(f"{direction}/{a}" for a in r.split("|"))
                     for r in self.roles_for(base, convention))

    #: torch: RecurrentLayout proposes Bidirectional when it sees *_reverse roles
    recognize_torch = None

    def recognize_keras(self, unit, convention):
        if not any(r.startswith("forward/") for r in unit.tensors):
            return None
        fwd = Unit(unit.key, {r.split("/", 1)[1]: t for r, t in unit.tensors.items()
                              if r.startswith("forward/")})
        p = super().recognize_keras(fwd, convention)
        if p is None:
            return None
        inner = {"class": p.keras_class, **p.args}
        return Proposal("Bidirectional", {"layer": inner}, {k: [t.name] for k, t in
                                                            unit.tensors.items()},
                        "bidirectional " + p.summary, p.in_features, 2 * p.out_features,
                        decide=p.decide, kind=p.kind)


def recognize(unit: Unit, convention: str) -> Proposal | None:
    """The first entry that recognises a unit of source tensors."""
    for lay in _unique_layouts():
        p = lay.recognize(unit, convention)
        if p is not None:
            return p
    return None


_UNIQUE: list = []


def _unique_layouts() -> list:
    if len(_UNIQUE) != len({id(v) for v in REGISTRY.values()}):
        _UNIQUE[:] = list({id(v): v for v in REGISTRY.values()}.values())
    return _UNIQUE
