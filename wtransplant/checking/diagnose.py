"""Per-layer diagnosis: where a transplanted model first goes wrong, and why.

Intermediate outputs of the Keras model are compared with reference activations (the
NumPy reference of the source, or activations the user stored under the layers' names).
At the first layer whose output diverges, the classic mistakes are tried one by one by
re-running just that layer, on its own correct input, with the suspected fix applied:

* a square Dense kernel transposed the wrong way;
* RNN gates in the wrong order (GRU z/r swapped, any LSTM gate permutation);
* a Dense after Flatten whose rows are in C,H,W instead of H,W,C order (or the reverse);
* a BatchNormalization / LayerNormalization epsilon (Keras' 1e-3 vs PyTorch's 1e-5).

A fix that makes the layer match is reported as the cause, with the error before and after
as evidence. Layer 2: public Keras API.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

#: a layer "diverges" when its max error relative to the reference's scale exceeds this
#: (float32 rounding in one layer is about 1e-7)
LAYER_RTOL = 1e-5


@dataclass
class LayerDiff:
    name: str
    class_name: str
    max_abs: float
    max_rel: float
    ok: bool

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Diagnosis:
    """What the per-layer comparison found; ``method`` None: no comparison ran (``note``
    says why). Reports hold this object; :meth:`to_dict` is their JSON ``diagnosis``."""

    method: str | None  # "numpy reference" | "stored activations" | None (did not run)
    layers: list[LayerDiff] = field(default_factory=list)
    first_bad: str | None = None
    cause: str | None = None  # transposed square kernel | gate order | flatten order | ...
    evidence: str | None = None
    note: str = ""

    @classmethod
    def unavailable(cls, why: str) -> Diagnosis:
        """No per-layer comparison could run; ``why`` says what was missing."""
        return cls(None, note=f"no per-layer diagnosis: {why}")

    @property
    def ran(self) -> bool:
        return self.method is not None

    def to_dict(self) -> dict:
        if not self.ran:
            return {"note": self.note}
        return {"method": self.method, "layers": [x.to_dict() for x in self.layers],
                "first_diverging_layer": self.first_bad, "cause": self.cause,
                "evidence": self.evidence, "note": self.note}

    # scripts written when reports held the JSON dict read it by its keys
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    def where(self) -> str:
        """``; first diverging layer L (cause)`` for a one-line parity error, or ``""``."""
        if self.first_bad is None:
            return ""
        return f"; first diverging layer {self.first_bad}" + (
            f" ({self.cause})" if self.cause else "")

    def summary(self) -> str:
        if not self.ran:
            return self.note
        if self.first_bad is None:
            return f"every layer matches the {self.method}"
        d = next(x for x in self.layers if x.name == self.first_bad)
        s = (f"first diverging layer: {d.name} ({d.class_name}), max rel err "
             f"{d.max_rel:.3g}")
        if self.cause:
            s += f"; it looks like {self.cause}: {self.evidence}"
        else:
            s += "; none of the classic causes (transposed square kernel, gate order, " \
                 "flatten order, normalisation epsilon) explains it"
        return s


def layer_outputs(model, x, names: list[str]) -> dict[str, np.ndarray]:
    """Outputs of the named layers for inputs x, through a Keras model that exposes them."""
    import keras

    layers = [model.get_layer(n) for n in names]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [lay.output for lay in layers])
    outs = probe(x, training=False)
    if not isinstance(outs, list | tuple):
        outs = [outs]
    return {n: np.asarray(keras.ops.convert_to_numpy(o), np.float64)
            for n, o in zip(names, outs)}


def _err(a: np.ndarray, e: np.ndarray) -> tuple[float, float]:
    if a.shape != e.shape:
        return float("inf"), float("inf")
    d = float(np.abs(a - e).max()) if a.size else 0.0
    scale = float(np.abs(e).max()) if e.size else 0.0
    return d, (d / scale if scale > 0 else (0.0 if d == 0 else float("inf")))


def diagnose(model, reference_acts: dict[str, np.ndarray], x, *, method: str,
             rtol: float = LAYER_RTOL) -> Diagnosis:
    """Compare the model's layer outputs with reference activations (Keras layout)."""
    names = [lay.name for lay in model.layers
             if lay.name in reference_acts and type(lay).__name__ != "InputLayer"]
    diag = Diagnosis(method)
    if not names:
        diag.note = "no reference activations under the names of the model's layers"
        return diag
    keras_acts = layer_outputs(model, x, names)
    from wtransplant.building.keras_model import inbound, input_layer_names

    ins = inbound(model)
    xs = x if isinstance(x, list | tuple) else [x]
    by_input = {n: np.asarray(a) for n, a in zip(input_layer_names(model), xs)}
    prev_input = np.asarray(xs[0])
    prev_name = None
    for n in names:
        lay = model.get_layer(n)
        a, e = keras_acts[n], reference_acts[n]
        mab, mrel = _err(a, e)
        ok = mrel <= rtol
        diag.layers.append(LayerDiff(n, type(lay).__name__, mab, mrel, ok))
        if not ok and diag.first_bad is None:
            diag.first_bad = n
            # the layer's own input: the Keras activation of the layer before it, which
            # matched the reference (or the model input)
            # in a graph: the layer's own (single) inbound tensor
            srcs = ins.get(n)
            if srcs is not None and len(srcs) == 1 and srcs[0] in by_input:
                inp = by_input[srcs[0]]
            elif srcs is not None and len(srcs) == 1 and srcs[0] in keras_acts:
                inp = keras_acts[srcs[0]]
            elif srcs is not None and len(srcs) != 1:
                inp = None  # a merge: the classic causes are single-input layers
            else:
                inp = keras_acts[prev_name] if prev_name is not None else prev_input
            cause = explain(model, lay, inp, e, mrel) if inp is not None else None
            if cause:
                diag.cause, diag.evidence = cause
        prev_name = n
    return diag


# --------------------------------------------------------------------------------------
# the classic causes


def _rerun(layer, x, weights=None, **config_changes) -> np.ndarray:
    """Run a fresh copy of ``layer`` (optionally with other weights / settings) on x."""
    import keras

    cfg = layer.get_config()
    cfg.update(config_changes)
    clone = type(layer).from_config(cfg)
    clone.build(tuple(x.shape))
    clone.set_weights(weights if weights is not None else layer.get_weights())
    y = clone(keras.ops.convert_to_tensor(x.astype(layer.compute_dtype
                                                  if "int" not in str(x.dtype) else x.dtype)),
              training=False)
    return np.asarray(keras.ops.convert_to_numpy(y), np.float64)


def explain(model, layer, x, expected, err_before) -> tuple[str, str] | None:
    """Try the classic fixes on one layer; the first that makes it match is the cause."""
    cls = type(layer).__name__
    tries = []
    w = layer.get_weights()
    if cls == "Dense":
        k = w[0]
        if k.shape[0] == k.shape[1]:
            tries.append(("a square kernel transposed the wrong way",
                          "with the kernel transposed", [k.T, *w[1:]], {}))
        fm = _flatten_map(model, layer)
        if fm is not None and len(fm) >= 2:
            *sp, c = fm
            n_out = k.shape[1]
            # rows stored C,H,W (PyTorch) where Keras expects H,W,C, and the reverse
            chw_to_hwc = k.reshape(c, *sp, n_out)
            fix1 = np.moveaxis(chw_to_hwc, 0, len(sp)).reshape(k.shape)
            hwc = k.reshape(*sp, c, n_out)
            fix2 = np.moveaxis(hwc, len(sp), 0).reshape(k.shape)
            tries.append(("the flatten order (kernel rows in C,H,W order, Keras flattens "
                          "H,W,C)", "with the rows reordered", [fix1, *w[1:]], {}))
            tries.append(("the flatten order (kernel rows in H,W,C order where C,H,W was "
                          "expected)", "with the rows reordered", [fix2, *w[1:]], {}))
    if cls in ("GRU", "LSTM") or (cls == "Bidirectional" and type(
            layer.forward_layer).__name__ in ("GRU", "LSTM")):
        inner = type(layer.forward_layer).__name__ if cls == "Bidirectional" else cls
        g = 3 if inner == "GRU" else 4
        names = "zrh" if inner == "GRU" else "ifco"
        n_per = 2 if cls == "Bidirectional" else 1
        per = len(w) // n_per  # kernel, recurrent_kernel, bias per direction
        subsets = [tuple(range(per)), (0, 1), (0,), (1,), (per - 1,)]
        for perm in itertools.permutations(range(g)):
            if perm == tuple(range(g)):
                continue
            order = ",".join(names[i] for i in perm)
            for sub in subsets:
                fixed = [_permute_gates(a, perm, g) if i % per in sub else a
                         for i, a in enumerate(w)]
                which = ", ".join(("kernel", "recurrent kernel", "bias")[j] for j in sub
                                  if j < 3)
                tries.append((f"RNN gates in the wrong order (the {which} hold gates "
                              f"{order} where Keras expects {','.join(names)})",
                              "with the gate blocks reordered", fixed, {}))
    if cls in ("BatchNormalization", "LayerNormalization"):
        eps = layer.get_config().get("epsilon")
        for alt in (1e-5, 1e-3, 1.001e-5, 1e-6, 1e-12, 1e-4):
            if eps is None or abs(alt - eps) > 1e-12:
                tries.append((f"a normalisation epsilon of {eps:g} where the source used "
                              f"{alt:g}", f"with epsilon {alt:g}", None, {"epsilon": alt}))
    for cause, how, weights, cfg in tries:
        try:
            y = _rerun(layer, x, weights, **cfg)
        except Exception:
            continue
        _, rel = _err(y, expected)
        if rel <= LAYER_RTOL:
            return cause, (f"{how} the layer matches the reference (max rel err "
                           f"{rel:.2g}, was {err_before:.2g})")
    return None


def _permute_gates(a: np.ndarray, perm, g: int) -> np.ndarray:
    """Reorder gate blocks along the last axis (kernel, recurrent kernel, bias)."""
    if a.shape[-1] % g:
        return a
    blocks = np.split(a, g, axis=-1)
    return np.concatenate([blocks[i] for i in perm], axis=-1)


def _flatten_map(model, layer):
    """The map shape (H, W, C) flattened right before ``layer``, if any."""
    from wtransplant.building.keras_model import PASS_THROUGH, parent_map

    parents = parent_map(model)
    p = parents.get(layer.name)
    hops = 0
    while p is not None and hops < 16:
        lay = model.get_layer(p)
        cls = type(lay).__name__
        if cls == "Flatten":
            try:
                return tuple(int(d) for d in lay.input.shape[1:])
            except Exception:
                return None
        if cls not in PASS_THROUGH:
            return None
        p = parents.get(p)
        hops += 1
    return None
