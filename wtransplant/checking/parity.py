"""Comparing a model's outputs with reference outputs (NumPy only).

Figures, all JSON-serialisable: max absolute error, max relative error (max |a - e| over
max |e|: relative to the output's scale, stable where single elements are near zero), the
elementwise relative error where |e| is not tiny, mean absolute error, cosine similarity,
and for classifier-like outputs (2-D, several columns) the argmax agreement. The pass test
is NumPy's ``allclose`` rule, elementwise: |a - e| <= atol + rtol * |e|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wtransplant.errors import InputError

#: what a passing check proves, by kind of reference (``ParityResult.kind``):
#: ``data``: outputs given by the user or stored with the source (the original model's own);
#: ``artifact``: another artifact of the model, run in its own runtime;
#: ``self-reference``: wtransplant's NumPy reference of the same architecture the model was
#: built from, fed the same source tensors. It proves the tensors were converted right for
#: that architecture, not that the architecture is the source model's.
KINDS = ("data", "artifact", "self-reference", "other")
SELF_REFERENCE_PASSED = ("tensors converted correctly for this architecture; the "
                         "architecture itself was not checked")


def kind_of(method: str) -> str:
    """The kind of reference a ``method`` description names."""
    m = method.lower()
    if m.startswith("numpy reference"):
        return "self-reference"
    if m.startswith("reference data"):
        return "data"
    if m.startswith("artifact"):
        return "artifact"
    return "other"

#: default tolerances by dtype of the compared outputs (documented in docs/verify.md)
DEFAULT_TOL = {"float64": (1e-7, 1e-6), "float32": (1e-5, 1e-4), "float16": (1e-3, 1e-2),
               "bfloat16": (1e-2, 5e-2)}


@dataclass
class ParityResult:
    method: str  # "reference data", "numpy reference", "artifact", ...
    passed: bool
    n_samples: int
    max_abs: float
    max_rel: float  # max |a-e| / max |e|
    max_rel_elementwise: float
    mean_abs: float
    cosine: float | None
    argmax_agreement: float | None
    atol: float
    rtol: float
    worst_index: list[int] = field(default_factory=list)
    #: one result per output of a multi-output model (empty for one output)
    outputs: list[ParityResult] = field(default_factory=list)
    detail: str = ""
    kind: str = ""  # data | artifact | self-reference | other (see KINDS); "" -> from method

    def __post_init__(self):
        if not self.kind:
            self.kind = kind_of(self.method)

    @property
    def verdict(self) -> str:
        """``OK`` / ``FAILED``; a passing self-reference check says what it proves instead
        (never ``OK``)."""
        if not self.passed:
            return "FAILED"
        return SELF_REFERENCE_PASSED if self.kind == "self-reference" else "OK"

    def to_dict(self) -> dict:
        d = dict(vars(self))
        d["verdict"] = self.verdict
        d["outputs"] = [o.to_dict() for o in self.outputs]
        return d

    def summary(self) -> str:
        s = (f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g}, "
             f"cosine {self.cosine:.9f}" if self.cosine is not None else
             f"max abs err {self.max_abs:.3g}, max rel err {self.max_rel:.3g}")
        if self.argmax_agreement is not None:
            s += f", argmax agreement {self.argmax_agreement:.1%}"
        if len(self.outputs) > 1:  # several outputs: each one's figure
            parts = []
            for i, o in enumerate(self.outputs):
                label = o.detail.rsplit("output ", 1)[-1] or str(i)
                ok = "" if o.passed else " FAILED"
                parts.append(f"{label} {o.max_rel:.3g}{ok}")
            s += f" (max rel err per output: {', '.join(parts)})"
        return f"{s} over {self.n_samples} samples: {self.verdict} (atol {self.atol:g}, " \
               f"rtol {self.rtol:g})"


def default_tolerance(dtype) -> tuple[float, float]:
    return DEFAULT_TOL.get(str(np.dtype(dtype)) if str(dtype) != "bfloat16" else "bfloat16",
                           DEFAULT_TOL["float32"])


def compare(actual, expected, *, atol: float | None = None, rtol: float | None = None,
            method: str = "reference data", what: str = "outputs",
            kind: str | None = None) -> ParityResult:
    """Compare one array or a list of arrays (multi-output models) elementwise. ``kind``:
    what the expected outputs are (see :data:`KINDS`; default: from ``method``)."""
    kind = kind or kind_of(method)
    if isinstance(actual, list | tuple) or isinstance(expected, list | tuple):
        a_list = list(actual) if isinstance(actual, list | tuple) else [actual]
        e_list = list(expected) if isinstance(expected, list | tuple) else [expected]
        if len(a_list) != len(e_list):
            raise InputError(f"{what}: the model has {len(a_list)} outputs but "
                             f"{len(e_list)} expected arrays were given")
        parts = [compare(a, e, atol=atol, rtol=rtol, method=method, what=f"{what}[{i}]",
                         kind=kind)
                 for i, (a, e) in enumerate(zip(a_list, e_list))]
        if len(parts) == 1:
            return parts[0]
        worst = max(parts, key=lambda p: p.max_rel)
        res = ParityResult(method, all(p.passed for p in parts), parts[0].n_samples,
                           max(p.max_abs for p in parts), max(p.max_rel for p in parts),
                           max(p.max_rel_elementwise for p in parts),
                           float(np.mean([p.mean_abs for p in parts])),
                           min((p.cosine for p in parts if p.cosine is not None), default=None),
                           None, worst.atol, worst.rtol, outputs=parts, kind=kind)
        return res
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        if a.size == e.size and a.shape[0] == e.shape[0]:
            raise InputError(f"{what}: model gives shape {a.shape}, expected {e.shape} (same "
                             f"size: a layout difference? set verify.output_layout)")
        raise InputError(f"{what}: model gives shape {a.shape}, expected {e.shape}")
    if e.dtype.kind not in "fiub" or a.dtype.kind not in "fiub":
        raise InputError(f"{what}: non-numeric outputs ({a.dtype}, {e.dtype})")
    if e.size == 0:  # a check over nothing checks nothing
        raise InputError(f"{what}: 0 values to compare (shape {e.shape}): give at least one "
                         f"sample")
    if e.dtype.kind == "f" and not np.all(np.isfinite(e)):
        bad = int(np.count_nonzero(~np.isfinite(e)))
        raise InputError(f"{what}: the expected outputs contain {bad} NaN/Inf values")
    dt = np.result_type(a.dtype, np.float32) if a.dtype.kind == "f" else np.float32
    if atol is None or rtol is None:
        d_atol, d_rtol = default_tolerance(dt if dt != np.float64 else a.dtype)
        atol = d_atol if atol is None else atol
        rtol = d_rtol if rtol is None else rtol
    a64 = a.astype(np.float64)
    e64 = e.astype(np.float64)
    diff = np.abs(a64 - e64)
    if not np.all(np.isfinite(a64)):
        n_bad = int(np.count_nonzero(~np.isfinite(a64)))
        return ParityResult(method, False, int(e.shape[0]) if e.ndim else 1, math.inf,
                            math.inf, math.inf, math.inf, None, None, atol, rtol,
                            detail=f"the model produced {n_bad} NaN/Inf values", kind=kind)
    scale = float(np.max(np.abs(e64))) if e64.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    big = np.abs(e64) > max(1e-6 * scale, 1e-30)
    rel_el = float((diff[big] / np.abs(e64[big])).max()) if np.any(big) else 0.0
    na = np.linalg.norm(a64.ravel())
    ne = np.linalg.norm(e64.ravel())
    cosine = float(np.dot(a64.ravel(), e64.ravel()) / (na * ne)) if na > 0 and ne > 0 else None
    argmax = None
    if e.ndim == 2 and e.shape[1] > 1:
        argmax = float(np.mean(np.argmax(a64, axis=1) == np.argmax(e64, axis=1)))
    passed = bool(np.all(diff <= atol + rtol * np.abs(e64)))
    worst = list(np.unravel_index(int(np.argmax(diff)), diff.shape)) if diff.size else []
    return ParityResult(method, passed, int(e.shape[0]) if e.ndim else 1, max_abs, max_rel,
                        rel_el, float(diff.mean()) if diff.size else 0.0, cosine, argmax,
                        float(atol), float(rtol), worst_index=[int(i) for i in worst],
                        kind=kind)
