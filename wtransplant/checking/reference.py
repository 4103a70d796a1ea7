"""An independent reference: the source's own forward pass, in NumPy, from the raw tensors.

Given the rebuilt model's layer list (class and settings), the mapping (which source
tensors feed which layer: not how they are converted) and the convention, this evaluates
what the *source* framework computes, in its own layout and equations:

* ``torch``: NCHW activations, (O, I/groups, k...) conv weights, (out, in) linear weights,
  GRU gates r,z,n with two biases, LSTM i,f,g,o, Flatten in C,H,W order, BatchNorm and
  LayerNorm with PyTorch's eps 1e-5 unless the spec sets epsilon explicitly;
* ``matlab``: dense chains y = W x + b with W out-by-in in MATLAB's own view;
* ``keras``: Keras layouts (channels-last, kernels (k..., in, out), GRU z,r,h).

It shares no code with :mod:`wtransplant.planning.layouts`: a conversion mistake (a square kernel
transposed, swapped gates, flatten order, a BatchNorm epsilon left at Keras' default) makes
the two disagree. Layers it cannot evaluate raise :class:`NotCovered` with the reason.

Where the source's semantics depend on the convention, a layer type is an :class:`Entry`
with one method per (aspect, convention): ``forward_keras``, ``kernel_torch``,
``epsilon_any``..., looked up along the convention's chain as the layout entries' are
(:func:`wtransplant.planning.layouts.conventions.find_method`); which conventions the
reference imitates at all, and how far, is :data:`SCOPES`. Layers whose semantics are the
same under every convention (pooling, padding, activations, merges) stay plain functions.
Layer 1: NumPy + h5py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wtransplant.checking import npops as F
from wtransplant.planning.layouts.conventions import add_method, chain, find_method
from wtransplant.planning.shapes import NotCovered  # one class: the shape code raises it too
from wtransplant.reading.loaded import writer_view
from wtransplant.reading.sources import Source

TORCH_EPS = 1e-5


@dataclass(frozen=True)
class Scope:
    """How far the reference imitates one convention: ``weighted`` (layer types with
    weights it evaluates; None: every entry with a method for the convention) and
    ``inputs`` (input kinds; None: any), each with the sentence that says so."""

    weighted: tuple | None = None
    inputs: tuple | None = None
    weighted_says: str = ""
    inputs_says: str = ""


#: conventions the reference imitates; a convention not listed uses its parent's line (an
#: ``onnx`` convention inheriting ``torch`` is imitated as PyTorch), and a convention whose
#: chain names none has no framework of its own to imitate (``plain``)
SCOPES: dict[str, Scope] = {
    "torch": Scope(),
    "keras": Scope(),
    "matlab": Scope(("Dense",), ("vec",), "the MATLAB reference covers dense chains only",
                    "the MATLAB reference covers dense chains on vectors only"),
}


def scope_for(convention: str) -> Scope | None:
    return next((SCOPES[c] for c in chain(convention) if c in SCOPES), None)


def reference_method(class_name: str, aspect: str, convention: str):
    """Decorator: add ``fn`` as the ``<aspect>_<convention>`` method of the reference entry
    for the Keras class ``class_name`` (a convention's own module uses it, as
    :func:`~wtransplant.planning.layouts.conventions.layout_method` for layouts)."""
    entry = OPS.get(class_name)
    if not isinstance(entry, Entry):
        raise ValueError(f"{class_name!r} has no convention-dependent reference entry")
    return add_method(type(entry), aspect, convention)


class Entry:
    """A layer type whose source semantics depend on the convention: ``forward_<conv>``
    (or ``forward_any``) runs it, with any per-convention views it asks for through
    :meth:`method` (``kernel_torch``...). Called as ``entry(ref, lay, act)``."""

    def __call__(self, ref, lay, act):
        return self.method("forward", ref.convention, lay)(ref, lay, act)

    def method(self, aspect: str, convention: str, lay):
        fn = find_method(self, aspect, convention)
        if fn is None:
            raise NotCovered(f"layer {lay.name} ({lay.class_name}) is not covered by the "
                             f"NumPy reference under the {convention} convention")
        return fn

    def covers(self, convention: str) -> bool:
        return find_method(self, "forward", convention) is not None


@dataclass
class RefLayer:
    name: str
    class_name: str
    config: dict
    explicit: set  # argument names the spec stated (vs Keras defaults)
    weights: dict = field(default_factory=dict)  # var -> list of raw arrays (source view)
    inner: RefLayer | None = None  # Bidirectional's wrapped layer
    #: lazy references: var -> source tensors, read (as float64) only while this layer runs
    sources: dict = field(default_factory=dict)


@dataclass
class Act:
    """An activation in the reference's own layout: maps are channels-first; 'flat' is a
    flattened map, in the order the source flattened it."""

    a: np.ndarray
    kind: str  # vec | seq | map | flat | ids | raw (already in Keras' layout)
    map_shape: tuple = ()  # for 'flat': (C, *spatial) before flattening (channels first)
    flat_order: str = "chw"  # 'chw' (PyTorch, MATLAB) or 'hwc' (Keras)


def to_keras(act: Act) -> np.ndarray:
    """The activation in the Keras model's layout, for comparison."""
    if act.kind == "map":
        return np.moveaxis(act.a, 1, -1)
    if act.kind == "flat" and act.flat_order == "chw" and act.map_shape:
        n = act.a.shape[0]
        return np.moveaxis(act.a.reshape(n, *act.map_shape), 1, -1).reshape(n, -1)
    return act.a


class Reference:
    def __init__(self, layers: list[RefLayer], convention: str, input_kind,
                 inbound: dict | None = None, inputs: list | None = None,
                 outputs: list | None = None, src=None):
        self.layers = layers
        self.convention = convention
        # one kind, or input name -> kind for several inputs
        self.input_kind = input_kind
        self.inbound = inbound  # layer name -> names it reads (None: a chain)
        self.inputs = inputs or ["input"]
        self.outputs = outputs or ([layers[-1].name] if layers else [])
        self.src = src  # an open source: weights are read per layer during forward (lazy)

    def _call(self, fn, lay: RefLayer, arg):
        """``fn(self, lay, arg)``; a lazy layer's float64 weights are read just before and
        dropped just after (one layer's weights in memory at a time)."""
        if not lay.sources:
            return fn(self, lay, arg)
        lay.weights = {v: [_raw(self.src, t) for t in ts] for v, ts in lay.sources.items()}
        try:
            return fn(self, lay, arg)
        finally:
            lay.weights = {}

    def forward(self, x, *, keep: bool = True):
        """x in the Keras model's layout (one array, or a list in the model's input order).
        Returns (output(s) in Keras layout: one array or a list in the model's output order,
        {layer name: activation in Keras layout}) in float64."""
        if self.inbound is None:
            act = _initial(np.asarray(x), self.input_kind)
            acts = {}
            for lay in self.layers:
                act = self._call(OPS.get(lay.class_name), lay, act)
                if keep:
                    acts[lay.name] = to_keras(act)
            return to_keras(act), acts
        xs = x if isinstance(x, list | tuple) else [x]
        if len(xs) != len(self.inputs):
            raise NotCovered(f"the model has {len(self.inputs)} inputs, got {len(xs)} arrays")
        kinds = self.input_kind if isinstance(self.input_kind, dict) else \
            {n: self.input_kind for n in self.inputs}
        env = {n: _initial(np.asarray(a), kinds[n]) for n, a in zip(self.inputs, xs)}
        acts = {}
        for lay in self.layers:
            srcs = [env[n] for n in self.inbound.get(lay.name, [])]
            if lay.class_name in MERGES:
                out = self._call(MERGES[lay.class_name], lay, srcs)
            else:
                if len(srcs) != 1:
                    raise NotCovered(f"layer {lay.name} ({lay.class_name}) has {len(srcs)} "
                                     f"inputs")
                out = self._call(OPS[lay.class_name], lay, srcs[0])
            env[lay.name] = out
            if keep:
                acts[lay.name] = to_keras(out)
        ys = [to_keras(env[n]) for n in self.outputs]
        return (ys if len(ys) > 1 else ys[0]), acts


def _initial(x: np.ndarray, kind: str) -> Act:
    if kind == "ids":
        return Act(x.astype(np.int64), "ids")
    x = x.astype(np.float64)
    if kind == "map":
        return Act(np.moveaxis(x, -1, 1), "map")
    return Act(x, kind)


def input_kind_for(first_class: str, rank: int, dtype: str) -> str:
    if first_class == "Embedding" or "int" in str(dtype):
        return "ids"
    if rank >= 3:
        return "map"
    if rank == 2:
        return "map" if first_class in ("Conv1D", "MaxPooling1D", "AveragePooling1D",
                                        "ZeroPadding1D", "Cropping1D", "DepthwiseConv1D",
                                        "SeparableConv1D", "Conv1DTranspose") else "seq"
    return "vec"


# --------------------------------------------------------------------------------------
# building from a rebuilt model and its plan


def build_reference(model, plan, src: Source, *, spec_layers: list[dict] | None = None,
                    lazy: bool = False) -> Reference:
    """A :class:`Reference` for a rebuilt Keras model, or NotCovered. ``lazy``: keep no
    weights; each forward pass reads a layer's tensors (as float64) just before the layer
    runs and drops them after, so ``src`` must stay open while the reference is used (a
    float64 copy of the whole model would be twice the model's bytes)."""
    conv = plan.convention
    scope = scope_for(conv)
    if scope is None:
        raise NotCovered(f"no reference semantics for the {conv} convention (a home-made "
                         f"layout has no framework of its own to imitate)")
    layers, inbound, in_names, out_names = _graph(model)
    by_target: dict[str, list] = {}
    for a in plan.assignments:
        # an explicit transpose/reshape in the spec is the user's claim about conversion;
        # the reference reads the raw tensor with the convention's own semantics regardless
        by_target[a.target.key] = a.sources
    explicit: dict[str, dict] = {}
    for d in spec_layers or []:
        if isinstance(d, dict) and d.get("name"):
            explicit[d["name"]] = d
    refs = []
    for lay in layers:
        cls = type(lay).__name__
        if cls not in OPS and cls not in MERGES:
            raise NotCovered(f"layer {lay.name} ({cls}) is not covered by the NumPy "
                             f"reference")
        cfg = lay.get_config()
        stated = explicit.get(lay.name)
        if stated is not None:
            # what the spec states about the source wins over the model's own settings:
            # a model that disagrees with its spec is what verify --spec must catch
            # (graph and PyTorch-style keys are built into other layers: ZeroPadding before
            # the conv, TorchPooling; their configs carry them)
            cfg = {**cfg, **{k: v for k, v in stated.items()
                             if k not in ("class", "layer", "inputs", "ceil_mode",
                                          "count_include_pad")
                             and not (k == "padding" and not isinstance(v, str))}}
            exp = set(stated)
        else:
            exp = set(cfg) if spec_layers is None else set()
        r = RefLayer(lay.name, cls, cfg, exp)
        if cls == "Bidirectional":
            inner_cfg = lay.forward_layer.get_config()
            r.inner = RefLayer(lay.name, type(lay.forward_layer).__name__, inner_cfg, exp)
        for key, srcs in by_target.items():
            lname, _, var = key.partition("/")
            if lname == lay.name:
                if lazy:
                    r.sources[var] = list(srcs)
                else:
                    r.weights[var] = [_raw(src, t) for t in srcs]
        if lay.weights and not (r.weights or r.sources):
            raise NotCovered(f"layer {lay.name} has no mapped source tensors")
        if scope.weighted is not None and lay.weights and cls not in scope.weighted:
            raise NotCovered(f"layer {lay.name} ({cls}): {scope.weighted_says}")
        if isinstance(OPS.get(cls), Entry) and not OPS[cls].covers(conv):
            raise NotCovered(f"layer {lay.name} ({cls}) is not covered by the NumPy "
                             f"reference under the {conv} convention")
        refs.append(r)
    kinds = {}
    for name, t in zip(in_names, model.inputs):
        first = next((r.class_name for r in refs if name in inbound.get(r.name, [])), "")
        kinds[name] = input_kind_for(first, len(t.shape) - 1, t.dtype)
    if scope.inputs is not None and any(k not in scope.inputs for k in kinds.values()):
        raise NotCovered(scope.inputs_says)
    kind = kinds[in_names[0]] if len(in_names) == 1 else kinds
    return Reference(refs, conv, kind, inbound, in_names, out_names,
                     src=src if lazy else None)


def _raw(src: Source, t) -> np.ndarray:
    return writer_view(src, t).astype(np.float64)  # MATLAB's own view


def _graph(model):
    """The model's layers in an order where inputs come first, who feeds whom, and the
    names of its inputs and outputs; NotCovered for shared layers and nested models."""
    from wtransplant.building.keras_model import inbound as _inbound
    from wtransplant.building.keras_model import input_layer_names

    try:
        cfg = model.get_config()
    except Exception as e:
        raise NotCovered(f"model config unavailable: {e}") from None
    for e in cfg.get("layers", []):
        nodes = e.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise NotCovered(f"layer {e.get('name')} is shared (called more than once)")
    layers = [lay for lay in model.layers if type(lay).__name__ != "InputLayer"]
    if any(hasattr(lay, "layers") and type(lay).__name__ not in ("Bidirectional",)
           for lay in layers):
        raise NotCovered("nested models are not covered by the NumPy reference")
    ins = _inbound(model)
    in_names = input_layer_names(model)
    if isinstance(model, __import__("keras").Sequential):
        in_names = [in_names[0]] if in_names else ["input"]
        prev = in_names[0]
        ins = {}
        for lay in layers:
            ins[lay.name] = [prev]
            prev = lay.name
    out_names = []
    for t in model.outputs:
        hist = getattr(t, "_keras_history", None)
        lay = getattr(hist, "operation", None) or (hist[0] if hist else None)
        if lay is None:
            raise NotCovered("cannot tell which layer produces an output")
        out_names.append(lay.name)
    return layers, ins, in_names, out_names


# --------------------------------------------------------------------------------------
# per-layer source semantics: one function per Keras class


def _w(lay: RefLayer, var: str, i: int = 0):
    v = lay.weights.get(var)
    return None if v is None else v[i]


def act_fn(cfg):
    try:
        return F.activation(cfg.get("activation", "linear"))
    except NotImplementedError as e:
        raise NotCovered(str(e)) from None


class DenseRef(Entry):
    def forward_keras(self, ref, lay, act):
        return self._dense(lay, act, lambda x, w: x @ w)

    def forward_torch(self, ref, lay, act):  # Linear: W is (out, in): y = W x
        return self._dense(lay, act, lambda x, w: x @ w.T)

    forward_matlab = forward_torch  # MATLAB dense: W out-by-in in MATLAB's own view

    @staticmethod
    def _dense(lay, act, matmul):
        if act.kind in ("map", "ids") or (act.kind == "raw" and act.a.ndim != 2):
            raise NotCovered(f"{lay.name}: Dense on a {act.kind} input")
        y = matmul(act.a, _w(lay, "kernel"))
        b = _w(lay, "bias")
        if b is not None:
            y = y + b.reshape(-1)
        kind = "seq" if act.kind == "seq" else "vec"
        return Act(act_fn(lay.config)(y), kind)


def to_map(lay, act: Act, nd: int) -> Act:
    if act.kind == "seq" and nd == 1:
        return Act(np.moveaxis(act.a, -1, 1), "map")
    if act.kind != "map" or act.a.ndim != nd + 2:
        raise NotCovered(f"{lay.name}: a {nd}-D layer on a {act.kind} input")
    return act


def conv_pads(cfg, spatial, k, s, d):
    padding = cfg.get("padding", "valid")
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "same":
        return [F.same_pads(spatial[i], k[i], s[i], d[i]) for i in range(len(spatial))]
    if padding == "causal":
        return [((k[0] - 1) * d[0], 0)]
    raise NotCovered(f"padding {padding!r}")


class ConvRef(Entry):
    """ConvNd: the kernel as (O, I/groups, k...), from the source's own layout."""

    def kernel_torch(self, w):
        return w

    def kernel_keras(self, w):
        return np.moveaxis(w, (-1, -2), (0, 1))  # Keras (k..., in, out)

    def forward_any(self, ref, lay, act):
        nd = int(lay.class_name[4])
        act = to_map(lay, act, nd)
        y = _padded_conv(lay, act.a, conv_weight(ref, lay), _w(lay, "bias"),
                         int(lay.config.get("groups", 1)))
        return Act(act_fn(lay.config)(y), "map")

    def covers(self, convention):
        return find_method(self, "kernel", convention) is not None


CONV = ConvRef()


def conv_weight(ref, lay, var="kernel"):
    """The kernel as (O, I/groups, k...), read in the source's own layout."""
    return CONV.method("kernel", ref.convention, lay)(_w(lay, var))


def _padded_conv(lay, x, w, bias, groups: int):
    """Pad as the layer's Keras padding says, then correlate with strides and dilation."""
    cfg = lay.config
    nd = x.ndim - 2
    s = F.ntuple(cfg.get("strides", 1), nd)
    d = F.ntuple(cfg.get("dilation_rate", 1), nd)
    x = F.pad_spatial(x, conv_pads(cfg, x.shape[2:], w.shape[2:], s, d))
    return F.conv(x, w, bias, s, d, groups)


class DepthwiseRef(Entry):
    """The depthwise kernel as (C*m, 1, k...) for a grouped conv with groups=C."""

    def kernel_torch(self, w, c):
        return w

    def kernel_keras(self, w, c):  # (k..., C, m) -> (C*m, 1, k...)
        m = w.shape[-1]
        return np.moveaxis(w, (-2, -1), (0, 1)).reshape(c * m, 1, *w.shape[:-2])

    def covers(self, convention):
        return find_method(self, "kernel", convention) is not None

    def forward_any(self, ref, lay, act):
        cfg = lay.config
        nd = int(lay.class_name[-2])
        act = to_map(lay, act, nd)
        c = act.a.shape[1]
        w = _w(lay, "kernel") if "kernel" in lay.weights else _w(lay, "depthwise_kernel")
        w = self.method("kernel", ref.convention, lay)(w, c)
        y = _padded_conv(lay, act.a, w, _w(lay, "bias"), groups=c)
        return Act(act_fn(cfg)(y), "map")


class SeparableRef(DepthwiseRef):
    """Depthwise as :class:`DepthwiseRef`, then the pointwise kernel as (out, C*m, 1...)."""

    def pointwise_torch(self, w):
        return w

    def pointwise_keras(self, w):  # (1..., C*m, out) -> (out, C*m, 1...)
        return np.moveaxis(w, (-1, -2), (0, 1))

    def forward_any(self, ref, lay, act):
        cfg = lay.config
        nd = int(lay.class_name[-2])
        act = to_map(lay, act, nd)
        c = act.a.shape[1]
        dw = self.method("kernel", ref.convention, lay)(_w(lay, "depthwise_kernel"), c)
        pw = self.method("pointwise", ref.convention, lay)(_w(lay, "pointwise_kernel"))
        y = _padded_conv(lay, act.a, dw, None, groups=c)
        y = F.conv(y, pw, _w(lay, "bias"))
        return Act(act_fn(cfg)(y), "map")


class ConvTransposeRef(ConvRef):
    """The kernel as (in, out, k...): PyTorch's own ConvTranspose layout."""

    def kernel_keras(self, w):  # Keras (k..., out, in) -> (in, out, k...)
        return np.moveaxis(w, (-1, -2), (0, 1))

    def forward_any(self, ref, lay, act):
        cfg = lay.config
        nd = int(lay.class_name[4])
        act = to_map(lay, act, nd)
        if cfg.get("padding", "valid") != "valid" or cfg.get("output_padding") or \
                any(v != 1 for v in F.ntuple(cfg.get("dilation_rate", 1), nd)):
            raise NotCovered(f"{lay.name}: transposed conv with padding other than 'valid'")
        w = self.method("kernel", ref.convention, lay)(_w(lay, "kernel"))
        s = F.ntuple(cfg.get("strides", 1), nd)
        y = F.conv_transpose(act.a, w, _w(lay, "bias"), s)
        return Act(act_fn(cfg)(y), "map")


class NormRef(Entry):
    """BatchNormalization / LayerNormalization: the epsilon the source used."""

    def epsilon_any(self, lay):
        return lay.config.get("epsilon", 1e-3)

    def epsilon_torch(self, lay):
        """PyTorch's eps unless the spec set epsilon explicitly: a Keras default left under
        the torch convention is exactly the mistake the reference should expose."""
        return lay.config.get("epsilon", 1e-3) if "epsilon" in lay.explicit else TORCH_EPS


class BatchNormRef(NormRef):
    def forward_any(self, ref, lay, act):
        return op_batchnorm(ref, lay, act)


class LayerNormRef(NormRef):
    def forward_any(self, ref, lay, act):
        return op_layernorm(ref, lay, act)


NORM = NormRef()


def _eps(ref, lay):
    return NORM.method("epsilon", ref.convention, lay)(lay)


def op_batchnorm(ref, lay, act):
    cfg = lay.config
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list | tuple) else axis
    if axis % act.a.ndim != act.a.ndim - 1:  # Keras layout: the channels are last
        raise NotCovered(f"{lay.name}: BatchNormalization over axis {axis}")
    ch_axis = 1 if act.kind == "map" else -1
    mean, var = _w(lay, "moving_mean").reshape(-1), _w(lay, "moving_variance").reshape(-1)
    g = _w(lay, "gamma")
    b = _w(lay, "beta")
    y = F.batchnorm(act.a, None if g is None else g.reshape(-1),
                    None if b is None else b.reshape(-1), mean, var, _eps(ref, lay), ch_axis)
    return Act(y, act.kind, act.map_shape, act.flat_order)


def op_layernorm(ref, lay, act):
    cfg = lay.config
    axis = cfg.get("axis", -1)
    if axis not in (-1, [-1]) or act.kind == "map":
        raise NotCovered(f"{lay.name}: LayerNormalization over axis {axis} of a {act.kind}")
    g = _w(lay, "gamma")
    b = _w(lay, "beta")
    y = F.layernorm(act.a, None if g is None else g.reshape(-1),
                    None if b is None else b.reshape(-1), _eps(ref, lay))
    return Act(y, act.kind)


def op_embedding(ref, lay, act):
    if act.kind != "ids":
        raise NotCovered(f"{lay.name}: Embedding needs integer ids")
    e = _w(lay, "embeddings")
    return Act(e[act.a], "seq" if act.a.ndim == 2 else "vec")


def _rnn_run(ref, lay: RefLayer, cls: str, x, weights: dict, reverse=False):
    cfg = lay.config
    n = x.shape[0]
    if cfg.get("stateful") or cfg.get("return_state") or cfg.get("go_backwards"):
        raise NotCovered(f"{lay.name}: stateful/return_state/go_backwards recurrent layers")
    units = int(cfg["units"])
    step, h0 = RNN.method("step", ref.convention, lay)(lay, cls, weights, n, units)
    seq = F.run_rnn(step, x, h0, reverse=reverse)
    return seq


class RecurrentRef(Entry):
    """SimpleRNN / GRU / LSTM: the step function in the source's own equations and layout,
    and the initial state: ``step_<convention>(lay, cls, weights, n, units)``."""

    def forward_any(self, ref, lay, act):
        return op_rnn(ref, lay, act)

    def covers(self, convention):
        return find_method(self, "step", convention) is not None

    def step_torch(self, lay, cls, weights, n, units):
        cfg = lay.config
        h0 = np.zeros((n, units))
        get = lambda v, i=0: (weights.get(v) or [None])[i]  # noqa: E731
        wih, whh = get("kernel"), get("recurrent_kernel")
        bias = weights.get("bias") or []
        if len(bias) != 2:
            raise NotCovered(f"{lay.name}: PyTorch recurrent biases must be bias_ih + "
                             f"bias_hh")
        bih, bhh = bias
        if cls == "GRU":
            step = F.torch_gru_step(wih, whh, bih, bhh)
        elif cls == "LSTM":
            step, h0 = F.torch_lstm_step(wih, whh, bih, bhh), (h0, np.zeros((n, units)))
        else:
            act = cfg.get("activation", "tanh")
            if act not in ("tanh", "relu"):
                raise NotCovered(f"{lay.name}: PyTorch RNN nonlinearity is tanh or relu")
            step = F.torch_rnn_step(wih, whh, bih, bhh, act)
        return step, h0

    def step_keras(self, lay, cls, weights, n, units):
        cfg = lay.config
        h0 = np.zeros((n, units))
        get = lambda v, i=0: (weights.get(v) or [None])[i]  # noqa: E731
        k, r, b = get("kernel"), get("recurrent_kernel"), get("bias")
        act = F.activation(cfg.get("activation", "tanh"))
        if cls == "GRU":
            step = F.keras_gru_step(k, r, b, bool(cfg.get("reset_after", True)), act,
                                    F.activation(cfg.get("recurrent_activation", "sigmoid")))
        elif cls == "LSTM":
            step = F.keras_lstm_step(k, r, b, act, F.activation(
                cfg.get("recurrent_activation", "sigmoid")))
            h0 = (h0, np.zeros((n, units)))
        else:
            step = F.keras_rnn_step(k, r, b, act)
        return step, h0

    step_matlab = step_keras  # (unreachable: the MATLAB scope is dense chains)

    def step_onnx(self, lay, cls, weights, n, units):
        """ONNX GRU/LSTM/RNN (W (1, G*H, I), R (1, G*H, H), B (1, 2*G*H)) in PyTorch's
        equations: gate blocks z,r,h -> r,z,n (GRU) and i,o,f,c -> i,f,g,o (LSTM)."""
        get = lambda v: (weights.get(v) or [None])[0]  # noqa: E731
        w, r, b = get("kernel"), get("recurrent_kernel"), get("bias")
        if w is None or r is None or w.ndim != 3 or w.shape[0] != 1:
            raise NotCovered(f"{lay.name}: the NumPy reference covers one-direction ONNX "
                             f"recurrent weights (1, gates*H, in) only")
        g = w.shape[1] // units
        order = {3: (1, 0, 2), 4: (0, 2, 3, 1), 1: (0,)}.get(g)
        if order is None:
            raise NotCovered(f"{lay.name}: {w.shape[1]} gate rows for {units} units")
        if cls == "GRU" and not lay.config.get("reset_after", True):
            raise NotCovered(f"{lay.name}: ONNX GRU with linear_before_reset=0")

        def torch_order(a):
            blocks = np.split(a, g, axis=0)
            return np.concatenate([blocks[i] for i in order], axis=0)

        b = np.zeros((1, 2 * g * units)) if b is None else b
        wb, rb = np.split(b[0], 2)
        args = (torch_order(w[0]), torch_order(r[0]), torch_order(wb), torch_order(rb))
        h0 = np.zeros((n, units))
        if cls == "GRU":
            return F.torch_gru_step(*args), h0
        if cls == "LSTM":
            return F.torch_lstm_step(*args), (h0, np.zeros((n, units)))
        act = lay.config.get("activation", "tanh")
        if act not in ("tanh", "relu"):
            raise NotCovered(f"{lay.name}: ONNX RNN activation {act!r}")
        return F.torch_rnn_step(*args, act), h0


class BidirectionalRef(RecurrentRef):
    def forward_any(self, ref, lay, act):
        return op_bidirectional(ref, lay, act)


RNN = RecurrentRef()


def op_rnn(ref, lay, act):
    if act.kind != "seq":
        raise NotCovered(f"{lay.name}: a recurrent layer on a {act.kind} input")
    seq = _rnn_run(ref, lay, lay.class_name, act.a, lay.weights)
    if lay.config.get("return_sequences"):
        return Act(seq, "seq")
    return Act(seq[:, -1], "vec")


def op_bidirectional(ref, lay, act):
    if act.kind != "seq":
        raise NotCovered(f"{lay.name}: Bidirectional on a {act.kind} input")
    inner = lay.inner
    cls = inner.class_name
    fw = {k.split("/", 1)[1]: v for k, v in lay.weights.items() if k.startswith("forward/")}
    bw = {k.split("/", 1)[1]: v for k, v in lay.weights.items() if k.startswith("backward/")}
    f = _rnn_run(ref, inner, cls, act.a, fw)
    b = _rnn_run(ref, inner, cls, act.a, bw, reverse=True)
    if not inner.config.get("return_sequences"):
        f, b = f[:, -1], b[:, 0]
    mode = lay.config.get("merge_mode", "concat")
    merged = {"concat": lambda: np.concatenate([f, b], axis=-1), "sum": lambda: f + b,
              "mul": lambda: f * b, "ave": lambda: (f + b) / 2}.get(mode)
    if merged is None:
        raise NotCovered(f"{lay.name}: merge_mode {mode!r}")
    out = merged()
    return Act(out, "seq" if out.ndim == 3 else "vec")


def op_pool(ref, lay, act):
    cls = lay.class_name
    nd = int(cls[-2])
    act = to_map(lay, act, nd)
    cfg = lay.config
    size = F.ntuple(cfg.get("pool_size", 2), nd)
    strides = cfg.get("strides") or size
    strides = F.ntuple(strides, nd)
    pads = conv_pads(cfg, act.a.shape[2:], size, strides, (1,) * nd)
    mode = "max" if cls.startswith("Max") else "avg"
    return Act(F.pool(act.a, size, strides, mode, pads), "map")


def op_global_pool(ref, lay, act):
    nd = int(lay.class_name[-2])
    act = to_map(lay, act, nd)
    axes = tuple(range(2, 2 + nd))
    y = act.a.max(axis=axes) if "Max" in lay.class_name else act.a.mean(axis=axes)
    if lay.config.get("keepdims"):
        raise NotCovered(f"{lay.name}: keepdims")
    return Act(y, "vec")


class FlattenRef(Entry):
    def forward_keras(self, ref, lay, act):
        if act.kind == "map":  # Keras flattens channels-last
            n = act.a.shape[0]
            return Act(np.moveaxis(act.a, 1, -1).reshape(n, -1), "vec")
        return self.forward_any(ref, lay, act)

    def forward_any(self, ref, lay, act):
        n = act.a.shape[0]
        if act.kind == "raw":  # Keras layout after Permute/Reshape: flattened as Keras does
            return Act(act.a.reshape(n, -1), "vec")
        if act.kind == "map":
            # PyTorch (and MATLAB) flatten channels-first / column-major: C,H,W order
            return Act(act.a.reshape(n, -1), "flat", tuple(act.a.shape[1:]), "chw")
        return Act(act.a.reshape(n, -1), "vec")


def op_zero_padding(ref, lay, act):
    nd = int(lay.class_name[-2])
    act = to_map(lay, act, nd)
    p = lay.config.get("padding", 1)
    pads = _norm_pairs(p, nd)
    return Act(F.pad_spatial(act.a, pads), "map")


def op_cropping(ref, lay, act):
    nd = int(lay.class_name[-2])
    act = to_map(lay, act, nd)
    c = _norm_pairs(lay.config.get("cropping", 0), nd)
    sl = (slice(None), slice(None)) + tuple(slice(b, act.a.shape[2 + i] - e)
                                            for i, (b, e) in enumerate(c))
    return Act(act.a[sl], "map")


def _norm_pairs(p, nd):
    if isinstance(p, int):
        return [(p, p)] * nd
    if nd == 1 and len(p) == 2 and all(isinstance(v, int) for v in p):
        return [tuple(p)]  # ZeroPadding1D / Cropping1D: (left, right)
    out = []
    for v in p:
        out.append((v, v) if isinstance(v, int) else tuple(v))
    if len(out) == 1 and nd > 1:
        out = out * nd
    return out


def op_activation_layer(ref, lay, act):
    cls = lay.class_name
    cfg = lay.config
    a = act.a
    ch = 1 if act.kind == "map" else -1
    if cls == "Activation":
        y = act_fn(cfg)(a) if cfg.get("activation") != "softmax" else F.softmax(a, ch)
    elif cls == "ReLU":
        mv = cfg.get("max_value")
        slope = cfg.get("negative_slope", 0.0)
        thr = cfg.get("threshold", 0.0)
        y = np.where(a >= thr, a, slope * (a - thr))
        if mv is not None:
            y = np.minimum(y, mv)
    elif cls == "LeakyReLU":
        slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
        y = np.where(a > 0, a, slope * a)
    elif cls == "ELU":
        y = F.elu(a, cfg.get("alpha", 1.0))
    elif cls == "Softmax":
        axis = cfg.get("axis", -1)
        if axis not in (-1, [-1]):
            raise NotCovered(f"{lay.name}: Softmax over axis {axis}")
        y = F.softmax(a, ch)
    else:
        raise NotCovered(cls)
    return Act(y, act.kind, act.map_shape, act.flat_order)


def op_identity(ref, lay, act):
    return act


class PReLURef(Entry):
    """PReLU: y = x for x > 0, alpha * x otherwise. Under torch/MATLAB/plain the slopes are
    a per-channel vector (or one value): channel axis 1 of a map, the last axis otherwise;
    under keras, alpha in Keras' own shape."""

    def forward_keras(self, ref, lay, act):
        k = to_keras(act)
        y = np.where(k > 0, k, _w(lay, "alpha") * k)
        return _from_keras(y, act)

    def forward_any(self, ref, lay, act):
        return _prelu_per_channel(lay, act)


def _prelu_per_channel(lay, act):
    a = act.a
    w = _w(lay, "alpha").reshape(-1)
    if w.size == 1:
        slope = w[0]
    elif act.kind == "map":
        if w.size != a.shape[1]:
            raise NotCovered(f"{lay.name}: {w.size} slopes for {a.shape[1]} channels")
        slope = w.reshape((1, -1) + (1,) * (a.ndim - 2))
    else:
        if w.size != a.shape[-1]:
            raise NotCovered(f"{lay.name}: {w.size} slopes for {a.shape[-1]} features")
        slope = w
    return Act(np.where(a > 0, a, slope * a), act.kind, act.map_shape, act.flat_order)


def _from_keras(y, like: Act) -> Act:
    """A Keras-layout array back into the reference's layout of ``like``."""
    if like.kind == "map":
        return Act(np.moveaxis(y, -1, 1), "map")
    if like.kind == "flat":
        return Act(y, "raw")
    return Act(y, like.kind)


def op_permute(ref, lay, act):
    dims = tuple(int(d) for d in lay.config.get("dims"))
    k = to_keras(act)
    return Act(np.transpose(k, (0,) + dims), "raw")


def op_reshape(ref, lay, act):
    shape = tuple(int(d) for d in lay.config.get("target_shape"))
    k = to_keras(act)
    y = k.reshape((k.shape[0],) + shape)
    return Act(y, "vec" if y.ndim == 2 else "raw")


def op_torch_pool(ref, lay, act):
    cfg = lay.config
    nd = act.a.ndim - 2 if act.kind == "map" else 1
    act = to_map(lay, act, nd)
    y = F.torch_pool(act.a, cfg["pool_size"], cfg.get("strides") or cfg["pool_size"],
                     cfg.get("padding", 0), cfg.get("mode", "max"),
                     bool(cfg.get("ceil_mode")), bool(cfg.get("count_include_pad", True)))
    return Act(y, "map")


def _same_layout(lay, acts: list[Act]) -> list[Act]:
    """Merge inputs in one layout: as they are if they agree, else all in Keras' layout."""
    kinds = {(a.kind, a.map_shape, a.flat_order) for a in acts}
    if len(kinds) == 1:
        return acts
    if any(a.kind == "flat" for a in acts):
        raise NotCovered(f"{lay.name}: merges a flattened map with other tensors")
    return [Act(to_keras(a), "raw") for a in acts]


def _merge(fn):
    def op(ref, lay, acts):
        acts = _same_layout(lay, acts)
        y = acts[0].a
        for a in acts[1:]:
            y = fn(y, a.a)
        first = acts[0]
        return Act(y, first.kind, first.map_shape, first.flat_order)
    return op


def op_average(ref, lay, acts):
    acts = _same_layout(lay, acts)
    y = sum(a.a for a in acts) / len(acts)
    return Act(y, acts[0].kind, acts[0].map_shape, acts[0].flat_order)


def op_subtract(ref, lay, acts):
    if len(acts) != 2:
        raise NotCovered(f"{lay.name}: Subtract takes two inputs")
    acts = _same_layout(lay, acts)
    return Act(acts[0].a - acts[1].a, acts[0].kind, acts[0].map_shape, acts[0].flat_order)


def op_concatenate(ref, lay, acts):
    axis = lay.config.get("axis", -1)
    if any(a.kind == "flat" for a in acts):
        raise NotCovered(f"{lay.name}: concatenates flattened maps (their order is the "
                         f"spec's `flatten:` choice)")
    if all(a.kind == "map" for a in acts) and axis in (-1, acts[0].a.ndim - 1):
        return Act(np.concatenate([a.a for a in acts], axis=1), "map")
    ks = [to_keras(a) for a in acts]
    y = np.concatenate(ks, axis=axis)
    kind = acts[0].kind if all(a.kind == acts[0].kind for a in acts) and \
        acts[0].kind in ("vec", "seq") else "raw"
    return Act(y, kind)


MERGES = {
    "Add": _merge(np.add), "Multiply": _merge(np.multiply),
    "Maximum": _merge(np.maximum), "Minimum": _merge(np.minimum),
    "Average": op_average, "Subtract": op_subtract, "Concatenate": op_concatenate,
}


_CONVT, _DEPTHWISE, _SEPARABLE = ConvTransposeRef(), DepthwiseRef(), SeparableRef()
_BIDIRECTIONAL = BidirectionalRef()

#: Keras class -> the source's forward pass: an :class:`Entry` (its methods per convention)
#: or a function (the same under every convention). Adding a layer type: one line here.
OPS = {
    "Dense": DenseRef(),
    "Conv1D": CONV, "Conv2D": CONV, "Conv3D": CONV,
    "DepthwiseConv1D": _DEPTHWISE, "DepthwiseConv2D": _DEPTHWISE,
    "SeparableConv1D": _SEPARABLE, "SeparableConv2D": _SEPARABLE,
    "Conv1DTranspose": _CONVT, "Conv2DTranspose": _CONVT, "Conv3DTranspose": _CONVT,
    "BatchNormalization": BatchNormRef(),
    "LayerNormalization": LayerNormRef(),
    "Embedding": op_embedding,
    "SimpleRNN": RNN, "GRU": RNN, "LSTM": RNN,
    "Bidirectional": _BIDIRECTIONAL,
    "MaxPooling1D": op_pool, "MaxPooling2D": op_pool, "MaxPooling3D": op_pool,
    "AveragePooling1D": op_pool, "AveragePooling2D": op_pool, "AveragePooling3D": op_pool,
    "GlobalAveragePooling1D": op_global_pool, "GlobalAveragePooling2D": op_global_pool,
    "GlobalAveragePooling3D": op_global_pool, "GlobalMaxPooling1D": op_global_pool,
    "GlobalMaxPooling2D": op_global_pool, "GlobalMaxPooling3D": op_global_pool,
    "Flatten": FlattenRef(),
    "ZeroPadding1D": op_zero_padding, "ZeroPadding2D": op_zero_padding,
    "ZeroPadding3D": op_zero_padding,
    "Cropping1D": op_cropping, "Cropping2D": op_cropping, "Cropping3D": op_cropping,
    "Activation": op_activation_layer, "ReLU": op_activation_layer,
    "LeakyReLU": op_activation_layer, "ELU": op_activation_layer,
    "Softmax": op_activation_layer,
    "PReLU": PReLURef(), "Permute": op_permute, "Reshape": op_reshape,
    "TorchPooling": op_torch_pool, "Identity": op_identity,
    "Dropout": op_identity, "SpatialDropout1D": op_identity, "SpatialDropout2D": op_identity,
    "SpatialDropout3D": op_identity, "GaussianNoise": op_identity,
    "GaussianDropout": op_identity, "AlphaDropout": op_identity,
    "ActivityRegularization": op_identity,
}


__all__ = ["NotCovered", "Reference", "build_reference", "to_keras", "math"]
