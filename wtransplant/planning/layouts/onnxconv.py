"""The ``onnx`` convention: initializers of an ONNX model (``reading/sources/onnxfile.py``).

ONNX's operators store weights the way PyTorch does (Conv W (out, in/groups, k...), Gemm
with transB=1 holds (out, in), BatchNormalization scale/B/mean/var), and a model exported by
``torch.onnx.export`` flattens NCHW maps in C,H,W order: every layer type inherits the
``torch`` convention's methods. Only ONNX's recurrent ops differ (/work/shared/LAYOUTS.md):

* GRU: W (D, 3H, I), R (D, 3H, H), B (D, 6H) = [Wb; Rb], gates z, r, h: Keras' own order.
  ``linear_before_reset=1`` (what PyTorch exports) is Keras ``reset_after=True``:
  kernel = W[d].T, recurrent_kernel = R[d].T, bias = B[d].reshape(2, 3H).
* LSTM: W (D, 4H, I), gates i, o, f, c -> Keras i, f, c, o; bias = Wb + Rb (4H).
* RNN: W (D, H, I), R (D, H, H), B (D, 2H): bias = Wb + Rb.

D is the direction axis (1, or 2 for ``bidirectional``: forward 0, backward 1). The
NumPy reference's step for this convention is ``RecurrentRef.step_onnx`` in
``checking/reference.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wtransplant._lazy import lazy
from wtransplant.planning.layouts.base import Proposal, mismatch, single
from wtransplant.planning.layouts.conventions import (
    Convention,
    layout_method,
    register_convention,
)
from wtransplant.planning.layouts.layers import check_recipe, rnn_class
from wtransplant.planning.layouts.ops import GateReorder, Op, OpShapeError, Reshape, Transpose

np = lazy("numpy")

#: ONNX gate orders, per Keras class (W's row blocks)
ONNX_GATES = {"GRU": "zrh", "LSTM": "iofc"}

ONNX = Convention(
    "onnx", parent="torch",
    about="ONNX initializers (torch.onnx.export): PyTorch's layouts; GRU gates z,r,h with "
          "B = [Wb; Rb], LSTM gates i,o,f,c, a leading direction axis",
    gates=dict(ONNX_GATES), gates_on_source_axis=False)


@dataclass
class TakeDirection(Op):
    """Keep one direction of an ONNX recurrent tensor: (D, ...) -> (...)."""

    index: int = 0

    def shapes(self, shapes):
        if len(shapes) != 1 or not shapes[0] or shapes[0][0] <= self.index:
            raise OpShapeError(f"{self.describe()} needs one tensor with a direction axis "
                               f"of more than {self.index}, got {shapes}")
        return [tuple(shapes[0][1:])]

    def apply(self, arrays):
        return [np.asarray(arrays[0][self.index])]

    def describe(self):
        which = "backward" if self.index else "forward"
        return f"take direction {self.index} ({which}) [ONNX (D, ...) -> one direction]"


@dataclass
class SumHalves(Op):
    """ONNX stacks the input and recurrent biases in one vector: [Wb; Rb] -> Wb + Rb."""

    def shapes(self, shapes):
        if len(shapes) != 1 or len(shapes[0]) != 1 or shapes[0][0] % 2:
            raise OpShapeError(f"{self.describe()} needs one vector of even length, got "
                               f"{shapes}")
        return [(shapes[0][0] // 2,)]

    def apply(self, arrays):
        a = np.asarray(arrays[0])
        half = a.shape[0] // 2
        return [a[:half] + a[half:]]

    def describe(self):
        return "sum halves [ONNX B = [Wb; Rb] -> Keras' single bias Wb + Rb]"


def _rnn_of(layer):
    if layer.class_name == "Bidirectional":
        return layer.inner_class, layer.inner_config or {}
    return layer.class_name, layer.config


def register() -> None:
    """Register the convention and its recurrent methods (once)."""
    from wtransplant.planning.layouts.conventions import convention_names

    if "onnx" in convention_names():
        return
    register_convention(ONNX)

    @layout_method("GRU", "source_roles", "onnx")
    def source_roles_onnx(self, var, convention, layer):
        return ({"kernel": "W", "recurrent_kernel": "R", "bias": "B"}
                .get(var.rsplit("/", 1)[-1], var),)

    @layout_method("GRU", "recipe", "onnx")
    def recipe_onnx(self, var, convention, shapes, layer, target):
        cls, cfg = _rnn_of(layer)
        single(shapes, target)
        direction = 1 if var.startswith("backward/") else 0
        base = var.rsplit("/", 1)[-1]
        take = [TakeDirection(direction)]
        if base in ("kernel", "recurrent_kernel"):
            reorder = [GateReorder(0, (0, 2, 3, 1), "i,o,f,c (ONNX)", "i,f,c,o (Keras)")] \
                if cls == "LSTM" else []
            kept = " (gate order z,r,h = Keras': kept)" if cls == "GRU" else ""
            return check_recipe(take + reorder + [Transpose(
                (1, 0), why=f"ONNX (gates*H, in) -> Keras (in, gates*H){kept}")],
                shapes, target)
        if cls == "GRU":
            if len(target.shape) == 2:  # reset_after=True: [input bias; recurrent bias]
                h3 = target.shape[1]
                return check_recipe(take + [Reshape((2, h3), why="ONNX B = [Wb; Rb] (6H) -> Keras "
                                                           "bias (2, 3H), gates z,r,h kept")],
                              shapes, target)
            if cfg.get("reset_after", True):
                raise mismatch(target, shapes, "an ONNX GRU bias for reset_after=True")
            # linear_before_reset=0 is Keras' reset_after=False: one bias Wb + Rb
            return check_recipe(take + [SumHalves()], shapes, target)
        ops = take + [SumHalves()]
        if cls == "LSTM":
            ops.append(GateReorder(0, (0, 2, 3, 1), "i,o,f,c (ONNX)", "i,f,c,o (Keras)"))
        return check_recipe(ops, shapes, target)

    @layout_method("GRU", "recognize", "onnx")
    def recognize_onnx(self, unit, convention):
        t = unit.tensors
        if not {"W", "R"} <= set(t):
            return None
        w, r = unit.shape("W"), unit.shape("R")
        if len(w) != 3 or len(r) != 3 or w[:2] != r[:2]:
            return None
        d, gh, n_in = w
        h = r[2]
        found = rnn_class(gh, h)
        if found is None or d not in (1, 2):
            return None
        cls, g = found
        if d == 2:
            return None  # bidirectional: both directions in one tensor; write it by hand
        args = {"units": h}
        if cls == "GRU":
            args["reset_after"] = True  # linear_before_reset=1, as torch.onnx.export writes
        slots = {"kernel": [t["W"].name], "recurrent_kernel": [t["R"].name]}
        if "B" in t:
            slots["bias"] = [t["B"].name]
        onnx_name = {"GRU": "GRU", "LSTM": "LSTM", "SimpleRNN": "RNN"}[cls]
        decide = ["return_sequences (True if another recurrent layer or a per-step output "
                  "follows)"]
        if cls == "GRU":
            decide.append("reset_after: true is ONNX linear_before_reset=1 (PyTorch's); "
                          "false for linear_before_reset=0")
        return Proposal(cls, args, slots,
                        f"ONNX {onnx_name} input {n_in}, hidden {h} ({g}x{h} = {gh} gate rows)",
                        n_in, h, decide=decide, kind=cls.lower())


__all__ = ["ONNX", "ONNX_GATES", "SumHalves", "TakeDirection", "register"]

register()
