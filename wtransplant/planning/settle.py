"""Settling a draft's undecided choices against reference data (``spec --inputs --expected``).

The tensors in a weight file fix sizes and layer kinds, not everything: activations, which
way a square matrix is stored, the flatten order before a dense layer, a normalisation
epsilon, conv padding/strides, and in unnamed lists (``arr_0``, ``arr_1``, ...) which tensor
feeds which variable among tensors of equal shape. Given inputs X and the source model's
outputs Y, every such choice is settled by trying its candidates in a float64 NumPy forward
pass of the spec *as rebuild will read it* (the same recipes turn the stored arrays into
Keras layout), so a settled draft rebuilds as written.

How (cost grows with the number of choices, not with their product):

* shape-only choices first (no forward pass): conv padding/strides are enumerated on shapes
  alone and only the settings whose shapes fit go on to the data; the input shape comes from
  the data;
* then coordinate descent over the remaining choices in layer order: the activations of the
  layers before the choice are cached, each candidate costs one forward pass of the layers
  from the choice to the output; sweeps repeat until nothing changes. A first guess ties
  all hidden activations together (one pass per candidate), which is right for most models;
* the last sweep is the evidence: for every choice, the error of the winner and of the
  runner-up with every other choice at its settled value.

A choice is *settled* when its winner fits (relative error under :data:`FIT_TOL`) and the
runner-up does not come within the noise floor (``max(TIE_FACTOR * winner, NOISE_FLOOR)``);
otherwise it stays ``{undecided: [...]}``, ranked best first, with a note saying which data
would split it. Names of one function (``silu``/``swish``, ``celu``/``elu``) are one
candidate, found by evaluating every built-in on a probe vector. Inputs that are too
degenerate (all samples equal, all zeros) settle nothing, and the draft says so.

Layer 1: NumPy, h5py and PyYAML only (the forward pass is :mod:`wtransplant.checking.reference`'s
operations under Keras semantics, the conversions are :mod:`wtransplant.planning.plan`'s recipes).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from wtransplant.checking import npops as F
from wtransplant.checking.reference import (
    OPS,
    Act,
    NotCovered,
    Reference,
    RefLayer,
    input_kind_for,
    to_keras,
)
from wtransplant.errors import InputError
from wtransplant.planning.layouts import TargetLayer, TargetVar, conventions
from wtransplant.planning.layouts.ops import apply as apply_ops
from wtransplant.planning.plan import build_recipe
from wtransplant.planning.shapes import (
    PASS_THROUGH,
    ShapeMismatch,
    int_padding,
    layer_shapes,
    per_axis,
)
from wtransplant.planning.spec import flow_yaml
from wtransplant.reading.sources import as_source

#: a candidate "fits" the data when its relative max error is under this
FIT_TOL = 1e-4
#: two candidates are a tie when the runner-up is within TIE_FACTOR x the winner's error
#: or under NOISE_FLOOR (float32 data: a few ulps of the output's scale)
TIE_FACTOR = 2.0
NOISE_FLOOR = 1e-6
MAX_SWEEPS = 4
MAX_STRUCT_COMBOS = 4096
MAX_PERMUTATION = 720  # 6! : equal-shape groups larger than this are not searched
#: the search stops after this many forward passes (or ``budget_s`` seconds): what it has
#: not settled by then stays undecided, and the report says why
MAX_EVALUATIONS = 20_000
#: the search runs on the first samples only (rebuild's parity check uses them all)
MAX_SETTLE_SAMPLES = 256

#: Keras 3 built-in activations the NumPy forward pass can evaluate, cheapest first
BUILTIN_ACTIVATIONS = ["linear", "relu", "tanh", "sigmoid", "softmax", "elu", "selu",
                       "gelu", "silu", "swish", "softplus", "softsign", "hard_sigmoid",
                       "relu6", "leaky_relu", "exponential", "mish", "hard_silu",
                       "log_softmax", "celu", "hard_tanh", "log_sigmoid"]
#: tried first; the other built-ins only when no combination of these fits the data
USUAL_ACTIVATIONS = ["linear", "relu", "tanh", "sigmoid", "softmax"]
EPSILONS = [1e-3, 1e-5, 1e-6, 1.001e-5]
FLATTEN_ORDERS = {"chw": "C,H,W (PyTorch)", "none": "H,W,C (Keras)", "whc": "W,H,C",
                  "fortran": "column-major (MATLAB)"}

_EXTRA = {
    "mish": lambda x: x * np.tanh(np.logaddexp(0, x)),
    "hard_silu": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "log_softmax": lambda x: x - x.max(-1, keepdims=True) - np.log(
        np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "celu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "hard_tanh": lambda x: np.clip(x, -1, 1),
    "log_sigmoid": lambda x: -np.logaddexp(0, -x),
}


def _act_fn(name):
    if name in _EXTRA:
        return _EXTRA[name]
    return F.activation(name)


def _alias_groups(names: list[str]) -> dict[str, str]:
    """name -> canonical name (the first in ``names`` computing the same function)."""
    probe = np.linspace(-8, 8, 161).reshape(7, 23)
    seen: list[tuple[str, np.ndarray]] = []
    out = {}
    with np.errstate(all="ignore"):
        for n in names:
            try:
                v = _act_fn(n)(probe)
            except NotImplementedError:
                continue
            for c, cv in seen:
                if np.allclose(v, cv, rtol=1e-12, atol=1e-12, equal_nan=True):
                    out[n] = c
                    break
            else:
                seen.append((n, v))
                out[n] = n
    return out


ALIAS = _alias_groups(BUILTIN_ACTIVATIONS)

#: where two activations differ: what inputs would split a tie between them
_SPLIT_HINTS = [
    ({"relu", "linear"}, "pre-activations below zero at this layer (e.g. inputs with "
                         "negative values)"),
    ({"relu", "relu6"}, "pre-activations above 6 at this layer (larger inputs)"),
    ({"relu6", "linear"}, "pre-activations below 0 or above 6 at this layer"),
    ({"hard_tanh", "linear"}, "pre-activations outside [-1, 1] at this layer (larger inputs)"),
    ({"hard_tanh", "tanh"}, "pre-activations away from zero at this layer"),
    ({"sigmoid", "hard_sigmoid"}, "pre-activations away from zero at this layer"),
    ({"elu", "selu"}, "any non-zero pre-activations at this layer"),
    ({"softmax", "linear"}, "outputs that do not sum to one (the data may be probabilities "
                            "already)"),
]


def split_hint(kind: str, labels: list[str], stats: dict | None = None) -> str:
    if kind == "activation":
        pair = set(labels[:2])
        for names, why in _SPLIT_HINTS:
            if pair <= names or names <= pair:
                return why
        span = ""
        if stats:
            span = f" (they spanned [{stats['min']:.3g}, {stats['max']:.3g}] here)"
        return f"pre-activations over a wider range at this layer{span}"
    if kind == "epsilon":
        return ("data where this layer's running variances matter: channels with small "
                "variance, or inputs far from the running mean")
    if kind == "orientation":
        return "more samples with varied inputs (the matrix's two orientations agree on these)"
    if kind == "flatten":
        return "inputs that vary across positions and channels (the orders agree on these)"
    if kind == "mapping":
        return "more varied samples (the tensors of equal shape act alike on these)"
    if kind == "gates":
        return ("longer sequences with varied inputs (the gate orders agree on these)")
    return "more varied samples"


# --------------------------------------------------------------------------------------
# choices


@dataclass
class Choice:
    kind: str  # activation | orientation | flatten | epsilon | mapping | structure | gates | other
    where: str  # model.layers[2].activation, weights.fc2/kernel, ...
    layer: str | None
    index: int  # first layer it affects
    candidates: list  # values, as the spec writes them
    labels: list[str]  # one short text per candidate
    targets: list = field(default_factory=list)  # (path tuple) the value(s) go to
    why: str | None = None
    value: object = None
    status: str = "undecided"  # settled | tie | unfit | degenerate | shapes | fixed
    errors: dict = field(default_factory=dict)  # label -> relative max error
    evidence: str = ""
    split: str = ""
    implicit: bool = False  # not marked undecided in the draft (e.g. flatten order)
    stats: dict | None = None
    #: candidates tried only if the first ones cannot fit the data (rarer built-ins)
    extra: list = field(default_factory=list)

    def ranked(self) -> list[tuple[str, float]]:
        return sorted(self.errors.items(), key=lambda kv: (kv[1], self.labels.index(kv[0])))

    def to_dict(self) -> dict:
        r = self.ranked()
        d = {"kind": self.kind, "where": self.where, "layer": self.layer,
             "status": self.status, "value": _jsonable(self.value),
             "candidates": [_jsonable(c) for c in self.candidates],
             "errors": {k: _num(v) for k, v in r},
             "winner": r[0][0] if r else None, "winner_error": _num(r[0][1]) if r else None,
             "runner_up": r[1][0] if len(r) > 1 else None,
             "runner_up_error": _num(r[1][1]) if len(r) > 1 else None,
             "evidence": self.evidence}
        if self.status == "tie":
            d["tied"] = list(getattr(self, "tied", []))
        if self.split:
            d["split_with"] = self.split
        return d


def _num(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def _label(v) -> str:
    from wtransplant.planning.spec import short_yaml

    if isinstance(v, dict) and "transpose" in v:
        return "out-by-in" if list(v["transpose"]) == [1, 0] else "in-by-out"
    if isinstance(v, tuple):
        return ", ".join(short_yaml(x) for x in v)
    return short_yaml(v)


# --------------------------------------------------------------------------------------
# shapes (one sample, channels last) and Keras variables, without Keras: wtransplant/planning/shapes.py


def _same_as_keras(d: dict) -> bool:
    """A conv whose PyTorch integer padding computes exactly what Keras' ``same`` does
    (stride 1, odd effective kernel, padding half of it on each side): not a choice."""
    if d.get("class") not in ("Conv1D", "Conv2D", "Conv3D") or not int_padding(d.get("padding")):
        return False
    nd = int(d["class"][4])
    k, p = per_axis(d["kernel_size"], nd), per_axis(d["padding"], nd)
    s, dil = per_axis(d.get("strides", 1), nd), per_axis(d.get("dilation_rate", 1), nd)
    return all(s[i] == 1 and ((k[i] - 1) * dil[i]) % 2 == 0 and
               p[i] == (k[i] - 1) * dil[i] // 2 for i in range(nd))


# --------------------------------------------------------------------------------------
# the NumPy model of a spec document


class Evaluator:
    """Forward passes of a spec document (dict) under Keras semantics, layer by layer, with
    the activations before each layer cached for the current document."""

    def __init__(self, doc: dict, loaded, src, convention: str, x: np.ndarray,
                 y: np.ndarray):
        self.doc = doc
        self.loaded = loaded
        self.src = as_source(src)
        self.conv = convention
        self.x = x
        self.y = y.astype(np.float64)
        self.scale = float(np.abs(self.y).max()) or 1.0
        self._raw: dict[str, np.ndarray] = {}
        self._conv_cache: dict = {}
        self.prefix: list[Act | None] = []
        self.evaluations = 0  # forward passes (whole or from a cached layer to the output)
        self.layer_ops = 0  # single-layer evaluations
        self.pre_stats: dict[int, dict] = {}
        self.deadline = math.inf  # time.perf_counter() value after which the search stops
        self.stopped: str | None = None

    def spent(self) -> bool:
        """Has the search used its budget? (checked between starts and sweeps)"""
        if self.stopped is None:
            if self.evaluations >= MAX_EVALUATIONS:
                self.stopped = f"the search stopped after {self.evaluations} forward passes"
            elif time.perf_counter() > self.deadline:
                self.stopped = "the search stopped: its time budget is spent"
        return self.stopped is not None

    # -- weights
    def raw(self, name: str) -> np.ndarray:
        if name not in self._raw:
            t = self.loaded.tensor(name)
            if t is None:
                raise InputError(f"no tensor {name!r} in {self.loaded.tree.display}")
            self._raw[name] = self.src.read(t.path)
        return self._raw[name]

    def _weights(self, i: int, d: dict, in_shape: tuple, vs, flatten_from) -> dict:
        from wtransplant.planning.spec import weight_ref

        name = d.get("name")
        tl = TargetLayer(name, d["class"], dict(d), [], index=i, input_shape=in_shape,
                         flatten_from=flatten_from)
        out = {}
        for var, shape in vs:
            key = f"{name}/{var}"
            entry = (self.doc.get("weights") or {}).get(key)
            if entry is None:
                raise NotCovered(f"{key}: no weights entry in the draft")
            ck = (key, repr(entry), shape, flatten_from, repr(sorted(
                (k, repr(v)) for k, v in d.items())) if d["class"] in ("GRU", "LSTM") else "")
            if ck not in self._conv_cache:
                wref = weight_ref(entry, ("weights", key))
                srcs = []
                for n in wref.sources:
                    t = self.loaded.tensor(n)
                    if t is None:
                        raise InputError(f"weights: {key} <- {n}: no such tensor in "
                                         f"{self.loaded.tree.display}")
                    srcs.append(t)
                tv = TargetVar(key, name, var, tuple(shape))
                tl.vars.append(tv)
                ops = build_recipe(tv, tl, srcs, self.conv, wref)
                arr = apply_ops(ops, [self.raw(n) for n in wref.sources])
                self._conv_cache[ck] = np.asarray(arr, dtype=np.float64)
            out[var] = [self._conv_cache[ck]]
        return out

    # -- structure
    def plan(self, doc: dict | None = None) -> list[tuple[dict, tuple, tuple, list, tuple]]:
        """[(layer dict, in shape, out shape, vars, flatten_from)] or ShapeMismatch."""
        doc = doc or self.doc
        shape = tuple(doc["model"]["input_shape"])
        out = []
        flat_from = None
        for d in doc["model"]["layers"]:
            if "inputs" in d:
                raise NotCovered("graph specs (items with 'inputs') are not covered by the "
                                 "settler yet")
            o, vs = layer_shapes(d, shape)
            ff = flat_from if d["class"] == "Dense" else None
            self._check_fit(doc, d, shape, vs, ff)
            out.append((d, shape, o, vs, ff))
            if d["class"] == "Flatten":
                flat_from = shape if len(shape) >= 2 else None
            elif d["class"] not in PASS_THROUGH:
                flat_from = None
            shape = o
        if tuple(out[-1][2]) != tuple(self.y.shape[1:]):
            raise ShapeMismatch(f"output {out[-1][2]} vs expected {self.y.shape[1:]}")
        return out

    def _check_fit(self, doc, d, in_shape, vs, ff) -> None:
        """ShapeMismatch unless every variable's source converts to its Keras shape (shapes
        only: nothing is read)."""
        from wtransplant.errors import MappingError
        from wtransplant.planning.spec import weight_ref

        name = d.get("name")
        for var, shape in vs:
            key = f"{name}/{var}"
            entry = (doc.get("weights") or {}).get(key)
            if entry is None or _is_und(entry):
                continue
            ck = ("fit", key, repr(entry), tuple(shape), ff)
            ok = self._conv_cache.get(ck)
            if ok is None:
                wref = weight_ref(entry, ("weights", key))
                srcs = [self.loaded.tensor(n) for n in wref.sources]
                ok = "ok"
                if any(t is None for t in srcs):
                    ok = f"{key}: no such source tensor"
                else:
                    tl = TargetLayer(name, d["class"], dict(d), [], input_shape=in_shape,
                                     flatten_from=ff)
                    try:
                        build_recipe(TargetVar(key, name, var, tuple(shape)), tl, srcs,
                                     self.conv, wref)
                    except MappingError as e:
                        ok = str(e)
                self._conv_cache[ck] = ok
            if ok != "ok":
                raise ShapeMismatch(ok)

    def initial(self) -> Act:
        first = self.doc["model"]["layers"][0]["class"]
        # integer data (uint8 pixels) are values, not token ids, unless an Embedding reads them
        kind = input_kind_for(first, self.x.ndim - 1,
                              self.x.dtype if first == "Embedding" else "float32")
        a = np.asarray(self.x, dtype=np.float64)
        return Act(np.moveaxis(a, -1, 1), "map") if kind == "map" else Act(a, kind)

    def run(self, start: int = 0, *, record: bool = False) -> float:
        """Relative max error of the output, running from layer ``start`` on the cached
        activation before it. ``record``: refresh the cache from ``start`` on."""
        try:
            plan = self.plan()
        except ShapeMismatch:
            return math.inf
        if start == 0 or len(self.prefix) < start or self.prefix[start - 1] is None:
            start = 0
        act = self.initial() if start == 0 else self.prefix[start - 1]
        ref = Reference([], "keras", "")
        self.evaluations += 1
        if record:
            self.prefix = self.prefix[:start] + [None] * (len(plan) - start)
        with np.errstate(all="ignore"):
            for i in range(start, len(plan)):
                d, in_shape, _o, vs, ff = plan[i]
                cfg = {k: v for k, v in d.items() if k not in ("class",)}
                if d["class"] in ("Dense", "Conv1D", "Conv2D", "Conv3D"):
                    cfg.setdefault("activation", "linear")
                lay = RefLayer(d.get("name", f"layer{i}"), d["class"], cfg, set(cfg))
                if vs:
                    lay.weights = self._weights(i, d, in_shape, vs, ff)
                act = self._op(ref, lay, act, i, record)
                self.layer_ops += 1
                if record:
                    self.prefix[i] = act
                if not np.all(np.isfinite(act.a)):
                    return math.inf
            out = to_keras(act)
            y = self.y
            if out.shape != y.shape:
                if out.size == y.size:
                    out = out.reshape(y.shape)
                else:
                    return math.inf
            err = float(np.abs(out - y).max()) / self.scale
        return err if math.isfinite(err) else math.inf

    def _op(self, ref, lay, act, i, record):
        act_name = lay.config.get("activation")
        if act_name in _EXTRA and lay.class_name in ("Dense", "Conv1D", "Conv2D",
                                                     "Activation"):
            lin = RefLayer(lay.name, lay.class_name, {**lay.config, "activation": "linear"},
                           lay.explicit, lay.weights)
            z = _pre(ref, lin, act)
            if record:
                self._note_stats(i, z.a)
            return Act(_EXTRA[act_name](z.a), z.kind, z.map_shape, z.flat_order)
        if record and act_name not in (None, "linear"):
            lin = RefLayer(lay.name, lay.class_name, {**lay.config, "activation": "linear"},
                           lay.explicit, lay.weights)
            if lay.class_name in ("Dense", "Conv1D", "Conv2D"):
                self._note_stats(i, _pre(ref, lin, act).a)
            elif lay.class_name == "Activation":
                self._note_stats(i, act.a)
        if lay.class_name in ("Conv1D", "Conv2D") and int(lay.config.get("groups", 1)) == 1:
            return _fast_conv(ref, lay, act)
        if lay.class_name == "Activation" and act_name not in ("softmax",):
            f = _act_fn(act_name)
            return Act(f(act.a), act.kind, act.map_shape, act.flat_order)
        try:
            return OPS[lay.class_name](ref, lay, act)
        except KeyError:
            raise NotCovered(f"{lay.class_name}") from None

    def _note_stats(self, i, z):
        self.pre_stats[i] = {"min": float(np.min(z)), "max": float(np.max(z))}


def _pre(ref, lin, act) -> Act:
    """A layer without its activation (``lin``: activation linear)."""
    if lin.class_name in ("Conv1D", "Conv2D") and int(lin.config.get("groups", 1)) == 1:
        return _fast_conv(ref, lin, act)
    return OPS[lin.class_name](ref, lin, act)


def _fast_conv(ref, lay, act) -> Act:
    """The reference's convolution (same padding rule and equations) as one matrix product
    of the unfolded windows: the settler runs thousands of them."""

    from wtransplant.checking.reference import act_fn, conv_pads, conv_weight, to_map

    if int_padding(lay.config.get("padding")):
        def conv_pads(cfg, spatial, _k, _s, _d):  # noqa: F811 -- PyTorch's: both sides
            return [(p, p) for p in per_axis(cfg["padding"], len(spatial))]

    cfg = lay.config
    nd = int(lay.class_name[4])
    act = to_map(lay, act, nd)
    w = conv_weight(ref, lay)  # (O, I, k...)
    s = F.ntuple(cfg.get("strides", 1), nd)
    d = F.ntuple(cfg.get("dilation_rate", 1), nd)
    x = F.pad_spatial(act.a, conv_pads(cfg, act.a.shape[2:], w.shape[2:], s, d))
    win = F.conv_windows(x, w.shape[2:], s, d)  # (N, C, *S', *K)
    y = np.tensordot(win, w, axes=([1, *range(2 + nd, 2 + 2 * nd)],
                                   [1, *range(2, 2 + nd)]))  # (N, *S', O)
    y = np.moveaxis(y, -1, 1)
    b = _w_of(lay, "bias")
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return Act(act_fn(cfg)(y), "map")


def _w_of(lay, var):
    v = lay.weights.get(var)
    return None if v is None else v[0]


def _feasible(ev, c: Choice, v) -> bool:
    """Cheap checks before a forward pass: a BatchNorm variance is never negative."""
    if c.kind != "mapping":
        return True
    for t, name in zip(c.targets, v):
        if t[-1].endswith("/moving_variance") and float(np.min(ev.raw(name))) < 0:
            return False
    return True


# --------------------------------------------------------------------------------------
# the data


def check_data(x: np.ndarray) -> tuple[list[str], str | None]:
    """(warnings, why the inputs cannot settle anything or None)."""
    warns = []
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        return warns, "no samples"
    flat = np.asarray(x, dtype=np.float64).reshape(n, -1)
    if not np.all(np.isfinite(flat)):
        return warns, "the inputs hold NaN/Inf values"
    distinct = len(np.unique(flat, axis=0)) if flat.size <= 50_000_000 else n
    vals = np.unique(flat[: min(n, 4096)])
    kind = ""
    if vals.size == 1:
        kind = f"every input value is {vals[0]:g}" + (" (all zeros)" if vals[0] == 0 else
                                                      " (all ones)" if vals[0] == 1 else "")
    if distinct < 2:
        return warns, (f"all {n} samples are the same" + (f": {kind}" if kind else "")
                       + "; every choice would be settled from one point")
    if n < 8:
        warns.append(f"only {n} samples: choices are settled on little evidence; 32 or more "
                     f"varied samples are better")
    if flat.shape[1] > 1 and n * flat.shape[1] <= 4_000_000:
        r = int(np.linalg.matrix_rank(flat - flat.mean(axis=0)))
        full = min(n - 1, flat.shape[1])
        if r < full:
            warns.append(f"the inputs are rank-deficient (rank {r} of {full} after centring): "
                         f"choices that differ only off that subspace cannot be told apart")
    if np.all(flat >= 0):
        warns.append("the inputs are never negative: choices that differ only on negative "
                     "values (relu vs linear in the first layer) may tie")
    return warns, None


# --------------------------------------------------------------------------------------
# collecting choices from a draft document


def _is_und(v) -> bool:
    return isinstance(v, dict) and "undecided" in v


def collect_choices(doc: dict, conv: str) -> list[Choice]:
    layers = doc["model"]["layers"]
    index = {d.get("name"): i for i, d in enumerate(layers)}
    out: list[Choice] = []
    struct: list[Choice] = []
    for i, d in enumerate(layers):
        for k, v in list(d.items()):
            if not _is_und(v):
                continue
            cands = list(v["undecided"])
            where = f"model.layers[{i}].{k}"
            if k == "activation":
                keep = []
                for c in cands + USUAL_ACTIVATIONS + BUILTIN_ACTIVATIONS:
                    c = ALIAS.get(c, c) if isinstance(c, str) else c
                    if c not in keep and (c in ALIAS.values()):
                        keep.append(c)
                first = [c for c in keep if c in cands or c in USUAL_ACTIVATIONS]
                ch = Choice("activation", where, d.get("name"), i, first, list(first),
                            [("model", "layers", i, k)], v.get("why"),
                            extra=[c for c in keep if c not in first])
            elif k == "epsilon":
                keep = list(dict.fromkeys([*cands, *EPSILONS]))
                ch = Choice("epsilon", where, d.get("name"), i, keep, [_label(c) for c in keep],
                            [("model", "layers", i, k)], v.get("why"))
            elif k in ("padding", "strides"):
                ch = Choice("structure", where, d.get("name"), i, cands,
                            [_label(c) for c in cands], [("model", "layers", i, k)],
                            v.get("why"))
                struct.append(ch)
                continue
            else:
                ch = Choice("other", where, d.get("name"), i, cands, [_label(c) for c in cands],
                            [("model", "layers", i, k)], v.get("why"))
            out.append(ch)
    weights = doc.get("weights") or {}
    groups: dict[tuple, list[str]] = {}
    gates: dict[str, list[str]] = {}
    for key, v in weights.items():
        lname = key.split("/", 1)[0]
        i = index.get(lname, 0)
        if _is_und(v):
            cands = list(v["undecided"])
            if all(isinstance(c, str) for c in cands):
                groups.setdefault(tuple(sorted(cands)), []).append(key)
                continue
            if _gate_candidates(cands):
                gates.setdefault(lname, []).append(key)
                continue
            kind = "orientation" if all(isinstance(c, dict) and "transpose" in c
                                        for c in cands) else "other"
            out.append(Choice(kind, f"weights.{key}", lname, i, cands,
                              [_label(c) for c in cands], [("weights", key)], v.get("why")))
        elif conventions.fact(conv, "flatten_order") in FLATTEN_ORDERS and lname in index and \
                layers[index[lname]]["class"] == "Dense" and key.endswith("/kernel") and \
                _after_flatten(layers, index[lname]):
            entry = v if isinstance(v, dict) else {"from": v}
            if any(k in entry for k in ("transpose", "reshape", "convert", "flatten")):
                continue
            default = conventions.fact(conv, "flatten_order")
            orders = [default] + [o for o in FLATTEN_ORDERS if o != default]
            cands = [{**entry, "flatten": o} for o in orders]
            out.append(Choice("flatten", f"weights.{key}", lname, index[lname], cands,
                              [f"{o}: {FLATTEN_ORDERS[o]}" for o in orders],
                              [("weights", key)], "the weights do not record the order in "
                              "which the source flattened its feature map", implicit=True))
    for names, keys in groups.items():
        keys = sorted(keys, key=lambda k: (index.get(k.split("/", 1)[0], 0), k))
        first = [weights[k]["undecided"][0] for k in keys]
        pool = list(names)
        if len(keys) > len(pool):
            raise InputError(f"weights: {', '.join(keys)} share {len(pool)} candidate "
                             f"tensors: not enough for each")
        perms = []
        for p in itertools.permutations(pool, len(keys)):
            perms.append(p)
            if len(perms) > MAX_PERMUTATION:
                break
        if len(perms) > MAX_PERMUTATION:
            continue  # left undecided: too many to search
        perms = [p for _, p in sorted(enumerate(perms),
                                      key=lambda ip: (ip[1] != tuple(first), ip[0]))]
        i = min(index.get(k.split("/", 1)[0], 0) for k in keys)
        out.append(Choice("mapping", "weights." + " + ".join(keys), keys[0].split("/")[0], i,
                          perms, [", ".join(f"{k} <- {n}" for k, n in zip(keys, p))
                                  for p in perms],
                          [("weights", k) for k in keys],
                          "tensors of equal shape whose names say nothing"))
    for lname, keys in gates.items():
        out.append(_gate_choice(weights, lname, keys, index.get(lname, 0)))
    if struct:
        out.insert(0, _joint(struct))
    out.sort(key=lambda c: (c.kind != "structure", c.index))
    return out


def _gate_candidates(cands) -> bool:
    """Candidates that are one weights entry with different `gates` (an RNN gate order)."""
    if len(cands) < 2 or not all(isinstance(c, dict) and isinstance(c.get("gates"), str)
                                 for c in cands):
        return False
    rest = [{k: v for k, v in c.items() if k != "gates"} for c in cands]
    return all(not _ne(r, rest[0]) for r in rest)


def _gate_choice(weights: dict, lname: str, keys: list[str], i: int) -> Choice:
    """One choice per RNN layer: the gate order of all its weights entries together (a
    kernel and a recurrent kernel in different orders is no model anyone wrote)."""
    orders: list[str] = []
    for k in keys:
        for c in weights[k]["undecided"]:
            if c["gates"] not in orders:
                orders.append(c["gates"])
    cands, labels = [], []
    for g in orders:
        combo = []
        for k in keys:
            base = {kk: vv for kk, vv in weights[k]["undecided"][0].items() if kk != "gates"}
            combo.append({**base, "gates": g})
        cands.append(tuple(combo))
        labels.append(f"gates {g}")
    why = next((weights[k].get("why") for k in keys if weights[k].get("why")), None)
    return Choice("gates", "weights." + " + ".join(keys), lname, i, cands, labels,
                  [("weights", k) for k in keys],
                  why or "the file does not record the RNN's gate order")


#: choices whose value is a tuple, one value per target
MULTI = ("mapping", "structure", "gates")


def _after_flatten(layers, i) -> bool:
    j = i - 1
    while j >= 0 and layers[j]["class"] in PASS_THROUGH:
        j -= 1
    return j >= 0 and layers[j]["class"] == "Flatten"


def _joint(struct: list[Choice]) -> Choice:
    """One choice whose candidates are every combination of the shape-setting choices."""
    combos = list(itertools.product(*[c.candidates for c in struct]))[:MAX_STRUCT_COMBOS]
    targets = [t for c in struct for t in c.targets]
    labels = [", ".join(f"{c.layer} {c.where.rsplit('.', 1)[1]} {_label(v)}"
                        for c, v in zip(struct, combo)) for combo in combos]
    ch = Choice("structure", ", ".join(c.where for c in struct), None,
                min(c.index for c in struct), combos, labels, targets,
                "the weights do not fix padding and strides")
    ch.parts = struct  # type: ignore[attr-defined]
    return ch


def set_value(doc: dict, ch: Choice, value) -> None:
    vals = value if (ch.kind in MULTI) else (value,)
    for t, v in zip(ch.targets, vals):
        _set(doc, t, v)


def _first_values(doc: dict) -> None:
    """Replace every {undecided: [...]} in the document with its first candidate."""
    def walk(v):
        if _is_und(v):
            return walk(v["undecided"][0])
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    new = walk(doc)
    doc.clear()
    doc.update(new)


# --------------------------------------------------------------------------------------
# settling


@dataclass
class SettleResult:
    doc: dict  # the document with settled values (ties/unfit: undecided, ranked)
    choices: list[Choice]
    warnings: list[str]
    degenerate: str | None
    evaluations: int  # forward passes (whole, or from a cached layer to the output)
    layer_ops: int
    product: int  # forward passes trying every combination would take
    seconds: float
    final_error: float | None

    def to_dict(self) -> dict:
        return {"choices": [c.to_dict() for c in self.choices], "warnings": self.warnings,
                "degenerate": self.degenerate, "forward_evaluations": self.evaluations,
                "layer_evaluations": self.layer_ops,
                "exhaustive_evaluations": self.product, "seconds": round(self.seconds, 4),
                "final_error": _num(self.final_error) if self.final_error is not None
                else None,
                "settled": sum(c.status == "settled" for c in self.choices),
                "undecided": sum(c.status != "settled" for c in self.choices)}


def settle(doc: dict, loaded, src, x: np.ndarray, y: np.ndarray, *, convention: str,
           progress=None, budget_s: float | None = None) -> SettleResult:
    """Settle the undecided choices of a draft document (a dict as YAML-loaded, holding
    ``{undecided: [...]}`` values) against inputs ``x`` (Keras layout) and outputs ``y``.
    Returns the settled document and the evidence for every choice."""
    t0 = time.perf_counter()
    m = doc.get("model") or {}
    if not isinstance(m.get("layers"), list) or "inputs" in m or "outputs" in m or any(
            isinstance(d, dict) and "inputs" in d for d in m["layers"]):
        raise NotCovered("graph specs (several inputs or outputs, items with 'inputs') are "
                         "not covered by the settler yet: settle a chain")
    original = _deepcopy(doc)
    work = _deepcopy(doc)
    choices = collect_choices(work, convention)
    warns, degenerate = check_data(x)
    if degenerate is None and not np.all(np.isfinite(np.asarray(y, dtype=np.float64))):
        degenerate = "the expected outputs hold NaN/Inf values"
    _first_values(work)
    if x.ndim >= 2:
        work["model"]["input_shape"] = list(x.shape[1:])
    ev = Evaluator(work, loaded, src, convention, x, y)
    if budget_s:
        ev.deadline = time.perf_counter() + budget_s
    product = math.prod(max(1, len(c.candidates) + len(c.extra)) for c in choices)
    if degenerate:
        for c in choices:
            c.status = "degenerate"
            c.evidence = f"not settled: the inputs are too degenerate ({degenerate})"
            c.split = "varied inputs (several different samples)"
        return _finish(original, work, choices, warns, degenerate, ev, product, t0, None)
    # 1. shapes only
    for c in choices:
        if c.kind != "structure":
            continue
        fit = []
        same_too = {t for p in getattr(c, "parts", []) if "same" in p.candidates
                    for t in p.targets}
        for v, lab in zip(c.candidates, c.labels):
            probe = _deepcopy(work)
            set_value(probe, c, v)
            if any(t in same_too and _same_as_keras(probe["model"]["layers"][t[2]])
                   for t in c.targets):
                continue  # the same numbers as `same`, which is a candidate too
            try:
                ev.plan(probe)
                fit.append((v, lab))
            except (ShapeMismatch, NotCovered):
                c.errors[lab] = math.inf
        if not fit:
            raise InputError("no padding/strides setting makes the layers' shapes fit the "
                             "data and the weights: "
                             + "; ".join(c.labels[:3]))
        c.shape_fit = [lab for _, lab in fit]  # type: ignore[attr-defined]
        c.candidates = [v for v, _ in fit]
        c.labels = [lab for _, lab in fit]
        set_value(work, c, c.candidates[0])
    try:
        ev.plan()
    except ShapeMismatch as e:
        raise InputError(f"the draft's layers do not fit the data: {e}") from None
    data_choices = [c for c in choices if len(c.candidates) > 1 or c.kind == "structure"]
    # 2. first guesses: every hidden activation the same (one pass per candidate), then
    # 3. coordinate descent in layer order from the best of them, then from the next ones
    # if it sticks; the rarer built-ins join only if the usual candidates cannot fit
    final = _search(ev, work, data_choices, progress)
    if final > FIT_TOL and any(c.extra for c in data_choices) and not ev.spent():
        for c in data_choices:
            c.candidates += c.extra
            c.labels += [_label(v) for v in c.extra]
            c.extra = []
        if progress:
            progress("the usual activations do not fit: trying every Keras built-in")
        final = _search(ev, work, data_choices, progress)
    _evidence(ev, work, data_choices)
    final = ev.run(0, record=True)
    for c in data_choices:
        c.stats = ev.pre_stats.get(c.index)
        _verdict(c, _get(work, c))
    for c in choices:
        if c not in data_choices:
            c.value = c.candidates[0]
            c.status = "settled"
            c.evidence = ("the only setting whose shapes fit" if c.kind == "structure"
                          else "the only candidate")
    return _finish(original, work, choices, warns, None, ev, product, t0, final)


MAX_STARTS = 6


def _search(ev, work, data_choices, progress) -> float:
    """Descents from the current values and from uniform hidden activations; leaves the
    best values in ``work`` and their evidence in each choice; returns the error."""
    acts = [c for c in data_choices if c.kind == "activation"]
    starts: list = [None]
    if len(acts) >= 2:
        last = max(c.index for c in acts)
        hidden = [c for c in acts if c.index != last]
        common = [v for v in hidden[0].candidates if all(v in c.candidates for c in hidden)]
        scored = []
        for v in common:
            for c in hidden:
                set_value(work, c, v)
            err = _best_last(ev, work, [c for c in acts if c.index == last], hidden[0].index)
            scored.append((err, common.index(v), v))
            if progress:
                progress(f"first guess: every hidden activation {v}: error {err:.3g}")
        scored.sort()
        starts = [[(c, v) for c in hidden] for _e, _i, v in scored[:MAX_STARTS]]
        if scored and scored[0][0] > FIT_TOL and len(hidden) >= 2:
            two = _two_blocks(ev, work, acts, progress)
            if two is not None and two[0] < scored[0][0]:
                starts.insert(0, two[1])
    best = None
    for st in starts:
        if best is not None and ev.spent():
            break
        for c, v in st or []:
            set_value(work, c, v)
        _descend(ev, work, data_choices, progress)
        err = ev.run(0, record=True)
        if best is None or err < best[0]:
            best = (err, [_get(work, c) for c in data_choices],
                    [dict(c.errors) for c in data_choices])
        if err <= FIT_TOL:
            break
    for c, v in zip(data_choices, best[1]):
        set_value(work, c, v)
    return ev.run(0, record=True)


def _two_blocks(ev, work, acts: list[Choice], progress):
    """The best model made of two blocks of hidden activations (a up to some layer, b
    after it: relu features then a tanh head), as a starting point: L x C^2 passes. Single
    layer moves alone get stuck there, since one wrong layer anywhere hides every other
    improvement. Returns (error, [(choice, value)...]) or None."""
    last = max(c.index for c in acts)
    hidden = [c for c in acts if c.index != last]
    if len(hidden) < 2:
        return None
    common = [v for v in hidden[0].candidates if all(v in c.candidates for c in hidden)]
    keep = [_get(work, c) for c in hidden]
    best = None
    for j in range(1, len(hidden)):
        if ev.spent():
            break
        for a in common:
            for c in hidden[:j]:
                set_value(work, c, a)
            ev.run(0, record=True)
            for b in common:
                if b == a:
                    continue
                for c in hidden[j:]:
                    set_value(work, c, b)
                err = ev.run(hidden[j].index)
                if best is None or err < best[0]:
                    best = (err, [(c, a) for c in hidden[:j]] + [(c, b) for c in hidden[j:]])
    for c, v in zip(hidden, keep):
        set_value(work, c, v)
    if progress and best:
        progress(f"two blocks: error {best[0]:.3g}")
    return best


def _evidence(ev, work, data_choices) -> None:
    """Every candidate of every choice with the others at their settled values."""
    ev.run(0, record=True)
    for c in data_choices:
        cur = _get(work, c)
        c.errors = {}
        for v, lab in zip(c.candidates, c.labels):
            if not _feasible(ev, c, v):
                c.errors[lab] = math.inf
                continue
            set_value(work, c, v)
            c.errors[lab] = ev.run(c.index)
        set_value(work, c, cur)
        ev.run(c.index, record=True)


def _descend(ev, work, data_choices, progress) -> None:
    ev.run(0, record=True)
    for sweep in range(MAX_SWEEPS):
        if sweep and ev.spent():
            break
        changed = False
        for c in data_choices:
            cur = _get(work, c)
            errs = {}
            for v, lab in zip(c.candidates, c.labels):
                if not _feasible(ev, c, v):
                    errs[lab] = math.inf
                    continue
                set_value(work, c, v)
                errs[lab] = ev.run(c.index)
            best_lab = min(c.labels, key=lambda lab: (errs[lab], c.labels.index(lab)))
            best_v = c.candidates[c.labels.index(best_lab)]
            c.errors = errs
            if _ne(best_v, cur) and errs[best_lab] < errs[c.labels[_index(c, cur)]]:
                changed = True
                set_value(work, c, best_v)
            else:
                set_value(work, c, cur)
            ev.run(c.index, record=True)
            if progress:
                progress(f"sweep {sweep + 1}: {c.where}: {best_lab} ({errs[best_lab]:.3g})")
        if not changed:
            break


def _best_last(ev, work, last: list[Choice], start: int) -> float:
    if not last:
        return ev.run(start)
    c = last[0]
    cur = _get(work, c)
    best = math.inf
    for v in c.candidates:
        set_value(work, c, v)
        best = min(best, ev.run(start))
    set_value(work, c, cur)
    return best


def _get(doc, c: Choice):
    vals = []
    for t in c.targets:
        node = doc
        for p in t:
            node = node[p]
        vals.append(node)
    return tuple(vals) if c.kind in MULTI else vals[0]


def _index(c: Choice, v) -> int:
    for i, x in enumerate(c.candidates):
        if not _ne(x, v):
            return i
    return 0


def _ne(a, b) -> bool:
    return repr(_jsonable(a)) != repr(_jsonable(b))


def _verdict(c: Choice, value) -> None:
    r = c.ranked()
    c.value = value
    w_lab, w = r[0]
    ru = r[1] if len(r) > 1 else None
    if not math.isfinite(w) or w > FIT_TOL:
        c.status = "unfit"
        c.evidence = (f"no candidate fits the data (best {w_lab}: relative error {w:.2g}); "
                      f"another choice, or the layer list, is likely wrong")
        return
    if ru is not None and ru[1] <= max(TIE_FACTOR * w, NOISE_FLOOR):
        c.status = "tie"
        ties = [lab for lab, e in r if e <= max(TIE_FACTOR * w, NOISE_FLOOR)]
        c.evidence = (f"tie: {', '.join(ties)} fit the data equally (errors "
                      f"{', '.join(f'{e:.2g}' for _, e in r[:len(ties)])})")
        c.split = split_hint(c.kind, ties, c.stats)
        c.tied = ties  # type: ignore[attr-defined]
        return
    c.status = "settled"
    if c.kind == "mapping" and ru:
        win = set(w_lab.split(", "))
        diff = ", ".join(p for p in ru[0].split(", ") if p not in win)
        c.evidence = (f"settled by data: this mapping error {w:.2g}, runner-up ({diff}) "
                      f"{ru[1]:.2g}")
        return
    c.evidence = (f"settled by data: {w_lab} error {w:.2g}" +
                  (f", runner-up {ru[0]} {ru[1]:.2g}" if ru else ""))


def _finish(original, work, choices, warns, degenerate, ev, product, t0, final):
    out = _deepcopy(work)
    for c in choices:
        if c.status == "settled":
            continue
        # stays undecided: candidates ranked best first (ties first)
        order = [lab for lab, _ in c.ranked()] if c.errors else []
        order = [lab for lab in order if lab in c.labels] + [lab for lab in c.labels
                                                            if lab not in order]
        if c.status == "tie":
            order = list(c.tied) + [lab for lab in order if lab not in c.tied]  # noqa
        cands = [c.candidates[c.labels.index(lab)] for lab in order]
        why = c.evidence + (f"; to split them: {c.split}" if c.split else "")
        if c.kind in MULTI:
            for j, t in enumerate(c.targets):
                _set(out, t, {"undecided": _uniq([v[j] for v in cands]), "why": why})
        else:
            _set(out, c.targets[0], {"undecided": cands, "why": why})
    if ev.stopped:
        warns = warns + [ev.stopped + "; choices it could not settle stay undecided"]
    return SettleResult(out, choices, warns, degenerate, ev.evaluations, ev.layer_ops,
                        product, time.perf_counter() - t0, final)


def _uniq(vals):
    out = []
    for v in vals:
        if all(_ne(v, o) for o in out):
            out.append(v)
    return out


def _set(doc, t, v):
    node = doc
    for p in t[:-1]:
        node = node[p]
    node[t[-1]] = v


def _deepcopy(d):
    import copy

    return copy.deepcopy(d)


# --------------------------------------------------------------------------------------
# the draft, settled: YAML text with the evidence as comments




def _comments_for(choices: list[Choice]) -> dict[tuple, list[str]]:
    """(path prefix of a line) -> comments; lines are a layer (model, layers, i) or a
    weights entry (weights, key)."""
    out: dict[tuple, list[str]] = {}
    for c in choices:
        for t in c.targets:
            line = t[:3] if t[0] == "model" else t[:2]
            key = t[3] if t[0] == "model" else "value"
            if c.status == "settled":
                text = c.evidence
                if c.kind == "structure" and len(c.targets) > 1:
                    text = c.evidence
                msg = f"{key} {text}" if t[0] == "model" else text
            elif c.status == "tie":
                msg = f"{key}: undecided (a tie)" if t[0] == "model" else "undecided (a tie)"
            else:
                msg = f"{key}: undecided ({c.status})" if t[0] == "model" else \
                    f"undecided ({c.status})"
            lst = out.setdefault(line, [])
            if msg not in lst:
                lst.append(msg)
    return out


def render(doc: dict, res: SettleResult | None, header: list[str], notes: list[str],
           data_note: str | None = None) -> str:
    """The settled document as YAML, one layer / weights entry per line, each settled value
    followed by a comment with its evidence."""
    com = _comments_for(res.choices) if res else {}
    lines = [f"# {_one_line(h.lstrip('#'))}" for h in header]
    if data_note:
        lines.append(f"# {_one_line(data_note)}")
    lines.append(f"version: {doc.get('version', 1)}")
    lines.append(f"source: {flow_yaml(doc['source'])}")
    lines.append(f"convention: {flow_yaml(doc.get('convention', 'auto'))}")
    m = doc["model"]
    lines.append("model:")
    ishape = m.get("input_shape")
    lines.append(f"  input_shape: {flow_yaml(ishape)}" + ("  # from the data" if res else ""))
    for k in ("input_dtype", "name"):
        if k in m:
            lines.append(f"  {k}: {flow_yaml(m[k])}")
    lines.append("  layers:")
    for i, d in enumerate(m["layers"]):
        c = com.get(("model", "layers", i))
        lines.append(f"    - {flow_yaml(d)}" + (f"  # {_one_line('; '.join(c))}" if c else ""))
    if doc.get("weights"):
        lines.append("weights:")
        for k, v in doc["weights"].items():
            c = com.get(("weights", k))
            lines.append(f"  {flow_yaml(k)}: {flow_yaml(v)}" + (f"  # {_one_line('; '.join(c))}"
                                                         if c else ""))
    for k in ("rules", "options"):
        if doc.get(k):
            lines.append(f"{k}: {flow_yaml(doc[k])}")
    if doc.get("verify"):
        lines.append("verify:")
        for k, v in doc["verify"].items():
            lines.append(f"  {k}: {flow_yaml(v)}" + ("  # the data given to `wtransplant spec`"
                                                 if k == "inputs" and res else ""))
    for n in notes:
        lines.append(f"# note: {_one_line(n)}")
    if res is not None:
        for w in res.warnings:
            lines.append(f"# warning: {_one_line(w)}")
        if res.degenerate:
            lines.append(f"# the inputs are too degenerate to settle anything: "
                         f"{_one_line(res.degenerate)}; give varied samples (not all equal, "
                         f"not all zeros or ones)")
        for c in res.choices:
            if c.status in ("tie", "unfit"):
                lines.append(f"# undecided: {c.where}: {_one_line(c.evidence)}"
                             + (f"; to split them: {_one_line(c.split)}" if c.split else ""))
        n_set = sum(c.status == "settled" for c in res.choices)
        lines.append(f"# settled {n_set} of {len(res.choices)} choices with "
                     f"{res.evaluations} forward passes (every combination: "
                     f"{res.product}) in {res.seconds:.2f} s")
    undecided_left = has_undecided(doc)
    if undecided_left:
        lines.append("# choices written {undecided: [...]} are not settled: `wtransplant "
                     "rebuild` refuses the spec until each holds one value (or --force, and "
                     "the result is unverified)")
    return "\n".join(lines) + "\n"


def _one_line(s: str) -> str:
    """Comment text: one line, printable characters only (names come from files)."""
    return "".join(ch if ch.isprintable() else "?" for ch in " ".join(str(s).split()))


def has_undecided(v) -> bool:
    if _is_und(v):
        return True
    if isinstance(v, dict):
        return any(has_undecided(x) for x in v.values())
    if isinstance(v, list):
        return any(has_undecided(x) for x in v)
    return False


def _rel_ref(ref, base) -> str:
    """A data reference (file, file:key, or a name in the source) relative to ``base``."""
    import os
    from pathlib import Path

    from wtransplant.checking.data import split_ref

    path, key = split_ref(str(ref))
    p = Path(path)
    if not p.exists():
        return str(ref)  # a tensor of the source file
    rel = os.path.relpath(p.resolve(), Path(base).resolve())
    return f"{rel}:{key}" if key else rel


def _numbered_view(weights):
    """(tensors with biases seen as vectors, name -> layer number) if every tensor is a
    numbered weight or bias (Weights/Layer1, b2...), else None."""
    import dataclasses

    from wtransplant.reading.formats import numbered_role

    out, owner = [], {}
    for t in weights:
        r = numbered_role(t.name)
        if r is None:
            return None
        owner[t.name] = r[1]
        if r[0] == "bias":
            t = dataclasses.replace(t, shape=(int(math.prod(t.shape)),))
        elif len(t.shape) != 2:
            return None
        out.append(t)
    out.sort(key=lambda t: (owner[t.name], len(t.shape) == 1))
    for i, t in enumerate(out):
        t.index = i  # replace() made copies: the loaded tensors keep their own order
    return (out, owner) if out else None


def draft_settled(path, *, spec_dir=None, inputs, expected, input_layout=None,
                  progress=None, budget_s: float | None = None):
    """``spec FILE --inputs X --expected Y``: the draft with every choice the data settle
    written as a plain value (and its evidence as a comment). Returns a
    :class:`wtransplant.planning.draft.Draft` whose ``spec``, ``choices`` and ``report`` carry the
    parsed spec and the evidence."""
    import os
    from pathlib import Path

    from wtransplant.planning.draft import Draft
    from wtransplant.planning.spec import load_spec
    from wtransplant.planning.unnamed import draft_unnamed, is_unnamed
    from wtransplant.reading.hints import split_io
    from wtransplant.reading.loaded import load_source
    from wtransplant.reading.sources import open_source

    inputs, expected = _one_pair(inputs, expected)
    base = Path(spec_dir) if spec_dir is not None else Path.cwd()
    path = Path(path)
    t0 = time.perf_counter()
    with open_source(path) as src:
        loaded = load_source(src)
        x, y, n_all = _settling_data(src, loaded, inputs, expected, input_layout)
        weights, _io = split_io(loaded.tensors)
        refs = {str(inputs), str(expected)}
        weights = [t for t in weights if t.name not in refs]
        header = [f"# Draft spec written by `wtransplant spec` for {path.name}",
                  f"# format: {loaded.format}; writer: {loaded.detection.writer or 'unknown'}"]
        if is_unnamed(weights):
            try:
                doc, conv, notes = draft_unnamed(weights, tuple(x.shape[1:]))
            except ValueError as e:
                raise InputError(f"unnamed tensors: {e}", path=str(path)) from None
            header.append("# the tensors are an unnamed list: layers read by order and shape")
        else:
            got = _named_doc(path, spec_dir, loaded, weights, x, _verify_entry(
                inputs, expected, base, input_layout))
            if isinstance(got, Draft):
                return got  # nothing to settle
            doc, conv, notes = got
        doc["source"] = os.path.relpath(path.resolve(), base.resolve())
        try:
            res = settle(doc, loaded, src, x, y, convention=conv, progress=progress,
                         budget_s=budget_s)
        except NotCovered as e:
            raise InputError(f"cannot settle this draft against the data: {e}",
                             path=str(path)) from None
    out = res.doc
    out["source"] = doc["source"]
    out["verify"] = _verify_entry(inputs, expected, base, input_layout)
    used = f"{x.shape[0]} samples" if x.shape[0] == n_all else \
        f"the first {x.shape[0]} of {n_all} samples"
    data_note = (f"settled against {inputs} -> {expected} ({used}) in "
                 f"{time.perf_counter() - t0:.2f} s")
    text = render(out, res, header, notes, data_note)
    spec = load_spec(text=text, base_dir=base)
    todo = [f"{c.where}: {c.status}" for c in res.choices if c.status != "settled"]
    report = res.to_dict()
    report["samples_used"] = int(x.shape[0])
    report["samples_given"] = int(n_all)
    d = Draft(text, rebuildable=not spec.undecided, todo=todo, notes=notes)
    d.spec = spec
    d.choices = report["choices"]
    d.report = report
    return d


def _one_pair(inputs, expected):
    """The one input and one expected output settling takes (a one-item list or mapping is
    taken apart)."""
    if isinstance(expected, list | tuple):
        if len(expected) != 1:
            raise InputError(f"{len(expected)} expected outputs: settling covers models with "
                             f"one output so far; give one")
        expected = expected[0]
    if isinstance(inputs, dict):
        if len(inputs) != 1:
            raise InputError("several named inputs: settling covers models with one input "
                             "so far")
        inputs = next(iter(inputs.values()))
    if inputs is None or expected is None:
        raise InputError("settling needs both inputs and expected outputs")
    return inputs, expected


def _settling_data(src, loaded, inputs, expected, input_layout):
    """(x channels last, y, samples given): at most MAX_SETTLE_SAMPLES are kept."""
    from wtransplant.checking.data import load_array, to_channels_last

    x = load_array(str(inputs), loaded=loaded, src=src)
    y = load_array(str(expected), loaded=loaded, src=src)
    if x.shape[:1] != y.shape[:1]:
        raise InputError(f"inputs {inputs} {x.shape} and expected {expected} {y.shape} "
                         f"hold different numbers of samples")
    x = to_channels_last(x, input_layout, f"inputs {inputs}")
    n_all = x.shape[0]
    if n_all > MAX_SETTLE_SAMPLES:
        x, y = x[:MAX_SETTLE_SAMPLES], y[:MAX_SETTLE_SAMPLES]
    return x, y, n_all


def _verify_entry(inputs, expected, base, input_layout) -> dict:
    """The settled spec's ``verify``: the data given to ``wtransplant spec``."""
    v = {"inputs": _rel_ref(inputs, base), "expected": _rel_ref(expected, base)}
    if input_layout and input_layout != "none":
        v["input_layout"] = input_layout
    return v


def _named_doc(path, spec_dir, loaded, weights, x, verify: dict):
    """(document, convention, notes) of the plain draft of a file whose tensors have names,
    to settle; the plain draft itself (with ``verify``) when it has no layer list."""
    import yaml

    from wtransplant.planning.draft import draft_spec

    d0 = draft_spec(path, spec_dir=spec_dir)
    # the header and whole-line comments hold names from the file (unescaped in the plain
    # draft); the settled draft writes its own
    body = d0.text.splitlines()
    start = next((i for i, x in enumerate(body) if x.startswith("version:")), 0)
    doc = yaml.safe_load("\n".join(x for x in body[start:]
                                   if not x.lstrip().startswith("#")))
    notes = list(d0.notes)
    conv = loaded.detection.convention if doc.get("convention", "auto") == "auto" \
        else doc["convention"]
    layers = (doc.get("model") or {}).get("layers")
    numbered = _numbered_view(weights)
    if not layers and numbered is not None:
        from wtransplant.planning.unnamed import draft_unnamed

        # numbered layers whose orientation the shapes cannot tell (all square): read them
        # in order, every orientation a choice
        try:
            doc2, conv, more = draft_unnamed(numbered[0], tuple(x.shape[1:]),
                                             owner=numbered[1])
        except ValueError:
            doc2 = None
        if doc2 is not None:
            conv = loaded.detection.convention
            doc2["convention"] = conv
            more = ["every numbered weight is square: the layers are read in their "
                    "numbered order and each orientation is settled by the data"]
            doc, notes, layers = doc2, notes + more, doc2["model"]["layers"]
    if not layers:
        d0.notes.append("nothing to settle: the draft has no layer list")
        if "verify" not in (doc or {}):
            d0.text += "verify:  # the data given to `wtransplant spec`\n" + "".join(
                f"  {k}: {flow_yaml(x)}\n" for k, x in verify.items())
        return d0
    return doc, conv, notes
