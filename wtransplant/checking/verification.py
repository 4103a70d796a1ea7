"""``wtransplant verify``: does a model compute what it should?

Three ways to say "what it should":

* reference data: ``verify(MODEL, inputs=X, expected=Y)``;
* another artifact of the same model: ``verify(MODEL, other=OTHER)`` (``.keras``, ``.h5``,
  SavedModel folder, ``.onnx``, ``.tflite``), on the same inputs, generated if none are
  given (seeded random of a realistic scale, never zeros or ones); MODEL is the reference;
* the source's own semantics: ``verify(MODEL, spec=SPEC)`` runs wtransplant's NumPy
  reference of the source named in the spec (the spec MODEL was rebuilt from).

When the check fails and intermediate activations are available (the NumPy reference with
``spec``, or ``activations``: arrays stored under the layers' names) the report names the
first diverging layer and, for the classic mistakes, the cause. Figures and the verdict
come from :func:`wtransplant.checking.parity.compare`; ``plot`` writes a PNG.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtransplant.atomic import write_json
from wtransplant.checking.data import load_array, split_ref, to_channels_last
from wtransplant.checking.diagnose import Diagnosis
from wtransplant.checking.parity import ParityResult, compare
from wtransplant.errors import InputError, ParityError

RANDOM_SAMPLES = 16


@dataclass
class VerifyReport:
    model: dict
    against: str  # what the outputs were compared with
    inputs: str  # where the inputs came from
    parity: ParityResult
    other: dict | None = None
    diagnosis: Diagnosis | None = None
    plot: str | None = None
    notes: list = field(default_factory=list)
    #: the Keras backend that ran the model, and why it was chosen
    backend: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.parity.passed

    def to_dict(self) -> dict:
        return {"wtransplant_report": "verify", "model": self.model, "other": self.other,
                "against": self.against, "inputs": self.inputs,
                "parity": self.parity.to_dict(),
                "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
                "plot": self.plot, "notes": self.notes, "backend": self.backend}


def _load(obj, trust_graph: bool = False):
    from wtransplant.runtimes import Artifact, from_model, load_artifact

    if isinstance(obj, Artifact):
        return obj
    if isinstance(obj, str | os.PathLike):
        return load_artifact(obj, trust_graph=trust_graph)
    return from_model(obj)  # an in-memory Keras model


def _arrays(refs, layout, what: str, base_dir=None) -> list[np.ndarray]:
    if refs is None:
        return []
    refs = [refs] if isinstance(refs, str | os.PathLike | np.ndarray) else list(refs)
    out = []
    for r in refs:
        a = r if isinstance(r, np.ndarray) else load_array(str(r), base_dir=base_dir)
        if a.dtype.kind not in "fiub":
            raise InputError(f"{what} {r}: not numeric ({a.dtype})")
        out.append(to_channels_last(a, layout, f"{what} {r}"))
    return out


def verify(model, *, other=None, inputs=None, expected=None, spec=None, activations=None,
           input_layout: str | None = None, output_layout: str | None = None,
           atol: float | None = None, rtol: float | None = None, samples: int | None = None,
           seed: int = 0, n_random: int = RANDOM_SAMPLES, plot=None, report_path=None,
           raise_on_failure: bool = True, trust_graph: bool = False) -> VerifyReport:
    """Check MODEL (a path or a Keras model) against reference data, another artifact or
    the NumPy reference of a spec's source.

    Args:
        model: a path (``.keras``, ``.h5``, SavedModel folder, ``.onnx``, ``.tflite``), a
            ``keras.Model`` or an Artifact.
        other: another artifact of the same model, run on the same inputs (MODEL is the
            reference).
        inputs: input arrays or references (``.npy``, ``data.npz:key``,
            ``data.h5:dataset``), one per model input; default: seeded random samples.
        expected: the expected outputs for ``inputs``, one per model output.
        spec: the spec MODEL was rebuilt from: compare with the NumPy reference of its
            source (``parity.kind == "self-reference"``: proves the tensors' conversion,
            not the architecture).
        activations: reference activations stored under the layers' names (``.npz`` or
            HDF5), for a per-layer diagnosis.
        input_layout, output_layout: layout of the stored arrays if not channels-last
            (``nchw``, ``ncl``, ``ncdhw``).
        atol, rtol: tolerances, elementwise ``|a - e| <= atol + rtol * |e|`` (default by
            dtype).
        samples: use the first N samples.
        seed, n_random: seed and count of the random samples used without ``inputs``.
        plot: write a PNG of the comparison here.
        report_path: write the JSON report here.
        raise_on_failure: raise :class:`ParityError` outside the tolerance (else only
            report it).

    Returns:
        A :class:`VerifyReport` (``parity`` with ``kind`` and ``verdict``, ``against``,
        ``diagnosis``).

    Raises:
        InputError: bad input: unreadable files, shapes that do not fit, nothing to
            compare with (exit 2).
        ParityError: outside the tolerance, after the report and plot are written (exit 1).
    """
    from wtransplant.runtimes import random_inputs

    art = _load(model, trust_graph)
    named = named_refs(inputs)
    if named is not None:
        xs = {k: _arrays([r], input_layout if _rank(r) > 2 else None, f"inputs {k}")[0]
              for k, r in named.items()}
        xs = art.check_inputs(xs)
    else:
        xs = _arrays(inputs, input_layout, "inputs")
    if samples:
        xs = [x[:samples] for x in xs]
    in_desc = _desc(inputs) if inputs is not None else ""
    if not xs:
        if expected is not None:
            raise InputError("expected outputs need inputs (the inputs that produced them)")
        xs = random_inputs(art, n_random, seed=seed)
        in_desc = f"{n_random} seeded random samples (seed {seed}, standard normal floats)"
    xs = art.check_inputs(xs)
    for x, name in zip(xs, art.input_names):
        if len(x) == 0:  # "OK over 0 samples" would check nothing
            raise InputError(f"inputs {in_desc or name}: 0 samples (shape {tuple(x.shape)}); "
                             f"verify needs at least one")
    notes: list[str] = []
    other_desc = None
    ref_acts = None
    if other is not None:
        art2 = _load(other, trust_graph)
        want = art.predict(xs)
        got = art2.predict(xs)
        against = f"{art2.display} ({art2.kind})"
        other_desc = art2.describe()
        method = f"artifact ({art2.kind} vs {art.kind})"
    elif expected is not None:
        exp = [expected] if isinstance(expected, str | os.PathLike | np.ndarray) else \
            list(expected)
        # several outputs: the layout applies to the maps among them
        want = [_arrays([r], output_layout if len(exp) == 1 or _rank(r) > 2 else None,
                        "expected")[0] for r in exp]
        if samples:
            want = [y[:samples] for y in want]
        got = art.predict(xs)
        if len(want[0]) != len(xs[0]):
            raise InputError(f"expected {expected}: {len(want[0])} samples, but the inputs "
                             f"have {len(xs[0])}")
        against = f"reference data {_desc(expected)}"
        method = "reference data"
    elif spec is not None:
        ref, ref_why = _spec_reference(art, spec)
        if ref is None:
            raise InputError(f"no NumPy reference for this model: {ref_why}")
        y_ref, ref_acts = ref.forward(xs if len(xs) > 1 else xs[0])
        want = y_ref if isinstance(y_ref, list) else [y_ref]
        got = art.predict(xs)
        against = f"the NumPy reference of {Path(str(_spec_source(spec))).name} " \
                  f"({ref.convention} semantics)"
        method = f"numpy reference ({ref.convention} semantics)"
    else:
        raise InputError("give reference outputs (expected=), another artifact (other=), "
                         "or the rebuild spec (spec=) to verify against")
    res = compare(got if len(got) > 1 else got[0], want if len(want) > 1 else want[0],
                  atol=atol, rtol=rtol, method=method, what="outputs")
    from wtransplant.backend import chosen

    report = VerifyReport(art.describe(), against, in_desc, res, other=other_desc, notes=notes,
                          backend=chosen())
    if not res.passed:
        report.diagnosis = _diagnose(art, xs, spec, activations, ref_acts)
    if plot is not None:
        from wtransplant.checking.plots import parity_plot

        layers = [x.to_dict() for x in report.diagnosis.layers] if report.diagnosis \
            else None
        report.plot = parity_plot(plot, actual=got, expected=want, layers=layers,
                                  title=f"{art.display}: {res.summary()}")
    if report_path is not None:
        write_json(report_path, report.to_dict())
    if raise_on_failure and not res.passed:
        where = report.diagnosis.where() if report.diagnosis else ""
        raise ParityError(f"{art.display}: outputs differ from {against}: "
                          f"{res.summary()}{where}", report=report)
    return report


def named_refs(refs) -> dict | None:
    """``NAME=FILE`` references (one per model input), or None for plain references. A
    mapping is taken as is."""
    if isinstance(refs, dict):
        return dict(refs)
    if refs is None or isinstance(refs, np.ndarray):
        return None
    items = [refs] if isinstance(refs, str | os.PathLike) else list(refs)
    out = {}
    for r in items:
        if not isinstance(r, str):
            return None
        name, sep, path = r.partition("=")
        if not sep or not path or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) \
                or Path(r).exists():
            if out:
                raise InputError(f"inputs: mix of NAME=FILE and plain references ({r!r}); "
                                 f"name every input as NAME=FILE")
            return None
        if name in out:
            raise InputError(f"inputs: {name} given twice")
        out[name] = path
    return out


def _rank(ref) -> int:
    """The rank of a reference array without keeping it (for layouts of several inputs)."""
    if isinstance(ref, np.ndarray):
        return ref.ndim
    return load_array(str(ref)).ndim


def _desc(ref) -> str:
    if isinstance(ref, str | os.PathLike):
        return str(ref)
    if isinstance(ref, list | tuple):
        return ", ".join(_desc(r) for r in ref)
    if isinstance(ref, np.ndarray):
        return f"an array of shape {ref.shape}"
    return str(ref)


def _spec_source(spec):
    from wtransplant.planning.spec import Spec, load_spec

    s = spec if isinstance(spec, Spec) else load_spec(spec)
    return s.source


def _spec_reference(art, spec):
    """The NumPy reference of the spec's source, for the model in ``art``."""
    from wtransplant.building.keras_model import describe_targets
    from wtransplant.checking.reference import NotCovered, build_reference
    from wtransplant.planning.plan import make_plan
    from wtransplant.planning.spec import Spec, load_spec
    from wtransplant.reading.loaded import load_source
    from wtransplant.reading.sources import open_source

    model = art.keras_model
    if model is None:
        return None, f"{art.kind} artifacts have no Keras layers to compare layer by layer"
    s = spec if isinstance(spec, Spec) else load_spec(spec)
    with open_source(s.source, follow_links=s.options.follow_links) as src:
        loaded = load_source(src)
        plan = make_plan(s, loaded, describe_targets(model))
        try:
            return build_reference(model, plan, src, spec_layers=s.model.layers
                                   if s.model is not None else None), None
        except NotCovered as e:
            return None, str(e)


def _diagnose(art, xs, spec, activations, ref_acts) -> Diagnosis:
    from wtransplant.checking.diagnose import diagnose

    model = art.keras_model
    if model is None:
        return Diagnosis.unavailable(f"a {art.kind} artifact has no Keras layers; verify the "
                                     f".keras model it came from")
    x = xs if len(xs) > 1 else xs[0]
    if activations is not None:
        acts = load_activations(activations)
        return diagnose(model, acts, x, method="stored activations")
    if ref_acts is None and spec is not None:
        ref, why = _spec_reference(art, spec)
        if ref is None:
            return Diagnosis.unavailable(why)
        _, ref_acts = ref.forward(x)
    if ref_acts is not None:
        return diagnose(model, ref_acts, x, method="numpy reference")
    return Diagnosis.unavailable("give spec= (the rebuild spec) for the NumPy reference, or "
                                 "activations= with reference activations stored under the "
                                 "layers' names")


def load_activations(ref) -> dict[str, np.ndarray]:
    """Reference activations stored under layer names: a .npz (keys = layer names) or an
    HDF5 file (datasets named after the layers, optionally under a group: file.h5:group)."""
    if isinstance(ref, dict):
        return {k: np.asarray(v) for k, v in ref.items()}
    path, group = split_ref(str(ref))
    p = Path(path)
    if not p.exists():
        raise InputError("activations file not found", path=str(p))
    if p.suffix.lower() == ".npz":
        from wtransplant.safety.bounds import check_npz

        check_npz(p)
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from wtransplant.reading.sources import open_source

    out = {}
    with open_source(p) as src:
        tree = src.tree()
        g = "/" + (group or "").strip("/")
        if g not in tree.groups:
            raise InputError(f"no group {group!r} in the activations file", path=str(p))
        for full in tree.children(g):
            if full in tree.datasets:
                out[full.rsplit("/", 1)[-1]] = src.read(full)
    if not out:
        raise InputError(f"no activations found in {ref}")
    return out
