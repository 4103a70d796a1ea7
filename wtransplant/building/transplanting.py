"""``wtransplant rebuild``: build the Keras model, map, convert, assign, verify, save.

Library use::

    spec = wtransplant.load_spec("net.yaml")
    model, report = wtransplant.rebuild(spec, output="net.keras")
    report.parity.passed

Layer 2 (public Keras API). A parity failure raises :class:`ParityError` (exit 1) after the
report is written; the model is then not saved unless ``force=True``. A spec that still
holds an undecided choice (``{undecided: [...]}``, see :mod:`wtransplant.planning.spec`) is refused
(:class:`UndecidedError`, exit 2) unless ``force=True``; the report then says
``verified: false`` and why.

``report.verified`` is true only when parity passed against data (``verify.inputs`` /
``expected``: the original model's outputs) and no choice was forced. A check against the
NumPy reference of the spec's own architecture (``parity.kind == "self-reference"``) proves
that the tensors were converted right for that architecture, not that the architecture is
the source model's: the report says so in ``unverified_reason``.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtransplant.atomic import atomic_path, write_json
from wtransplant.checking.data import load_array, to_channels_last
from wtransplant.checking.diagnose import Diagnosis
from wtransplant.checking.parity import ParityResult, compare
from wtransplant.errors import InputError, ParityError
from wtransplant.planning.plan import (
    Plan,
    array_hasher,
    count_nonfinite,
    make_plan,
    materialize,
)
from wtransplant.planning.spec import ModelSpec, Spec, VerifySpec, describe_undecided, load_spec
from wtransplant.provenance import file_sha256
from wtransplant.reading.h5io import fmt_bytes
from wtransplant.reading.hints import split_io
from wtransplant.reading.loaded import LoadedSource, load_source
from wtransplant.reading.sources import Source as OpenedSource
from wtransplant.reading.sources import open_source
from wtransplant.reading.sources.base import as_source


class UndecidedError(InputError):
    """The spec still holds undecided choices (a draft's guesses) and ``force`` is not set.
    Exit code 2. ``undecided`` lists them (as ``Spec.undecided``)."""

    def __init__(self, message: str, *, undecided: list[dict], **kw):
        super().__init__(message, **kw)
        self.undecided = undecided


def undecided_choices(spec: Spec, *, model_used: bool = True) -> list[dict]:
    """The spec's undecided choices that matter for a build (those in ``model`` only when
    the spec's model is built)."""
    return [u for u in spec.undecided
            if model_used or not str(u.get("where", "")).startswith("model")]


def check_decided(spec: Spec, *, force: bool = False, model_used: bool = True) -> list[dict]:
    """Refuse a spec with undecided choices unless ``force``; returns those choices.

    Args:
        spec: a loaded spec.
        force: build anyway, with each choice's first candidate.
        model_used: whether the spec's ``model`` section is built (False for
            :func:`transplant`, which fills an existing model).

    Returns:
        The undecided choices that apply (empty when everything is decided).

    Raises:
        UndecidedError: there are undecided choices and ``force`` is false; the one-line
            message names every one (where, line, candidates).
    """
    items = undecided_choices(spec, model_used=model_used)
    if items and not force:
        where = str(spec.path) if spec.path is not None else "spec"
        raise UndecidedError(
            f"{where}: {len(items)} undecided choice{'s' if len(items) > 1 else ''} (guesses "
            f"of the draft, no model is built on them): {describe_undecided(items)}; write "
            f"the right value in place of each {{undecided: [...]}}, or pass force=True to "
            f"build with the first candidates (the result is then marked unverified)",
            undecided=items)
    return items


@dataclass
class RebuildReport:
    source: dict
    spec: dict | None
    model: dict
    plan: Plan
    checksums: list[dict] = field(default_factory=list)
    parity: ParityResult | None = None
    parity_note: str = ""
    diagnosis: Diagnosis | None = None
    output: dict | None = None
    notes: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    #: undecided choices of the spec that were built at their first candidate (force)
    undecided: list[dict] = field(default_factory=list)
    #: the Keras backend that built and checked the model, and why it was chosen
    backend: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.parity is None or self.parity.passed

    @property
    def unverified_reason(self) -> str | None:
        """Why the rebuilt model is not known to compute what the source model computed
        (None: it is, parity passed against data and nothing was forced)."""
        reasons = []
        if self.undecided:
            reasons.append(f"built on {len(self.undecided)} undecided choice"
                           f"{'s' if len(self.undecided) > 1 else ''} taken at their first "
                           f"candidate (forced): {describe_undecided(self.undecided)}")
        p = self.parity
        if p is None:
            reasons.append(f"parity not checked: {self.parity_note}" if self.parity_note
                           else "parity not checked")
        elif not p.passed:
            reasons.append(f"parity failed ({p.method})")
        elif p.kind == "self-reference":
            reasons.append("checked only against the NumPy reference of the model's own "
                           "architecture, which proves the tensors' conversion, not the "
                           "architecture; give verify.inputs/expected (the source model's "
                           "outputs) to verify it")
        elif p.kind != "data":
            reasons.append(f"checked against {p.method}, not against the source model's "
                           f"outputs")
        return "; ".join(reasons) or None

    @property
    def verified(self) -> bool:
        """True only when parity passed against data and no undecided choice was forced."""
        return self.unverified_reason is None

    def to_dict(self) -> dict:
        return {
            "wtransplant_report": "rebuild",
            "source": self.source,
            "spec": self.spec,
            "model": self.model,
            "plan": self.plan.to_dict(),
            "checksums": self.checksums,
            "parity": self.parity.to_dict() if self.parity else None,
            "parity_note": self.parity_note,
            "verified": self.verified,
            "unverified_reason": self.unverified_reason,
            "undecided": self.undecided,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "output": self.output,
            "notes": self.notes,
            "backend": self.backend,
            "versions": self.versions,
            "timings": self.timings,
        }


def versions() -> dict:
    import h5py
    import keras

    from wtransplant import __version__

    out = {"wtransplant": __version__, "keras": keras.__version__,
           "keras_backend": keras.backend.backend(), "h5py": h5py.__version__,
           "hdf5": h5py.version.hdf5_version, "numpy": np.__version__,
           "python": platform.python_version()}
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        out["tensorflow"] = tf.__version__
    else:
        try:
            from importlib.metadata import version

            out["tensorflow"] = version("tensorflow")
        except Exception:
            out["tensorflow"] = None
    return out


def _backend() -> dict:
    from wtransplant.backend import chosen

    return chosen()


def file_sha256_async(path: Path):
    """Start hashing a file in a background thread (reading and hashing release the GIL,
    so it overlaps with building and assigning); returns a function that waits for the
    hex digest (and re-raises what the thread raised)."""
    import threading

    box: dict = {}

    def work():
        try:
            box["sha"] = file_sha256(path)
        except BaseException as e:  # handed to the caller
            box["err"] = e

    th = threading.Thread(target=work, name="wtransplant-sha256", daemon=True)
    th.start()

    def result() -> str:
        th.join()
        if "err" in box:
            raise box["err"]
        return box["sha"]

    return result


# --------------------------------------------------------------------------------------


def rebuild(spec: Spec | str | os.PathLike, *, output: str | os.PathLike | None = None,
            report_path: str | os.PathLike | None = None, force: bool = False,
            progress: bool | None = None, checksums: bool = True):
    """Build the spec's model, map, convert and assign every tensor, check parity and (if
    ``output``) save.

    Args:
        spec: a :class:`~wtransplant.planning.spec.Spec` or the path of a spec file.
        output: where to save the model (``.keras`` or ``.h5``); None: do not save.
        report_path: where to write the JSON report (also written when parity fails).
        force: build a spec with undecided choices (first candidates) and save the model
            even if parity fails; the report then says ``verified: false`` and why.
        progress: show a progress bar (None: on a terminal only).
        checksums: record sha256 checksums of every source and assigned tensor.

    Returns:
        ``(model, report)``: the Keras model and the :class:`RebuildReport`
        (``report.parity``, ``report.verified``, ``report.unverified_reason``).

    Raises:
        UndecidedError: the spec holds undecided choices and ``force`` is false (exit 2).
        InputError: bad spec, unreadable or unsafe source, a shape no rule explains
            (:class:`~wtransplant.errors.MappingError`) (exit 2).
        ParityError: the rebuilt model does not compute what the reference computes (exit
            1); raised after the report is written, ``err.report`` holds it.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    from wtransplant.safety.paths import check_output, spec_inputs

    for out, what in ((output, "output"), (report_path, "report")):
        check_output(out, spec_inputs(spec), what=what)
    undecided = check_decided(spec, force=force, model_used=spec.model is not None)
    t0 = time.perf_counter()
    with open_source(spec.source, follow_links=spec.options.follow_links) as src:
        loaded = load_source(src)
        t = time.perf_counter()
        model, notes = _model_for(spec, loaded)
        build_s = time.perf_counter() - t
        return _transplant(spec, src, loaded, model, notes, output=output,
                           report_path=report_path, force=force, progress=progress,
                           checksums=checksums, t0=t0, build_s=build_s, undecided=undecided)


def transplant(model, spec: Spec | str | os.PathLike, *, output=None, report_path=None,
               force: bool = False, progress: bool | None = None, checksums: bool = True):
    """Fill an existing Keras model from the spec's source file (the spec's ``model``
    section, if any, is not used), check parity and (if ``output``) save.

    Args:
        model: a built ``keras.Model`` whose layer and variable names the spec's
            ``weights``/``rules`` (or name-and-shape matching) refer to.
        spec: a :class:`~wtransplant.planning.spec.Spec` or the path of a spec file.
        output: where to save the model (``.keras`` or ``.h5``); None: do not save.
        report_path: where to write the JSON report.
        force: accept undecided choices in ``weights`` and save even if parity fails.
        progress: show a progress bar (None: on a terminal only).
        checksums: record sha256 checksums of every source and assigned tensor.

    Returns:
        ``(model, report)``: the same model, filled, and the :class:`RebuildReport`.

    Raises:
        UndecidedError: undecided choices outside ``model`` and ``force`` is false (exit 2).
        InputError: bad spec, unreadable source, a variable without a source or a shape no
            rule explains (exit 2).
        ParityError: the filled model does not compute what the reference computes (exit 1).
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    undecided = check_decided(spec, force=force, model_used=False)
    t0 = time.perf_counter()
    with open_source(spec.source, follow_links=spec.options.follow_links) as src:
        loaded = load_source(src)
        return _transplant(spec, src, loaded, model, [], output=output,
                           report_path=report_path, force=force, progress=progress,
                           checksums=checksums, t0=t0, undecided=undecided)


def rebuild_file(path: str | os.PathLike, *, output: str | os.PathLike | None = None,
                 report_path: str | os.PathLike | None = None, force: bool = False,
                 progress: bool | None = None, verify: VerifySpec | None = None):
    """Rebuild a file that carries its own architecture (a Keras 2 full-model H5, a Keras 3
    ``.keras`` archive), with no spec: weights are matched by layer name.

    Args:
        path: the source file.
        output: where to save the model (``.keras`` or ``.h5``); None: do not save.
        report_path: where to write the JSON report.
        force: save the model even if parity fails.
        progress: show a progress bar (None: on a terminal only).
        verify: reference data to check parity against (``VerifySpec(inputs=...,
            expected=...)``); without it the NumPy reference of the file's own
            architecture is used and the report says ``verified: false``.

    Returns:
        ``(model, report)`` as :func:`rebuild`.

    Raises:
        InputError: unreadable or unsafe file, or one without its own architecture (exit 2).
        ParityError: the rebuilt model does not compute what the reference computes (exit 1).
    """
    spec = Spec(source=Path(path).resolve(), convention="keras", model=None, verify=verify)
    spec.path = None
    return rebuild(spec, output=output, report_path=report_path, force=force,
                   progress=progress)


def _model_for(spec: Spec, loaded: LoadedSource):
    from wtransplant.building.keras_model import (
        build_model_notes,
        model_from_config,
        model_from_keras2_config,
    )

    notes: list[str] = []
    if spec.model is not None:
        try:
            return build_model_notes(spec.model, name=spec.name)
        except InputError as e:
            from wtransplant.planning.speclines import locate_layer_error

            located = locate_layer_error(str(e), spec)
            if located == str(e):
                raise
            raise type(e)(located, detail=e.detail) from None
    where = f"{loaded.tree.display}"
    if loaded.format == "keras-legacy-model":
        cfg = loaded.tree.root_attrs.get("model_config")
        try:
            from wtransplant.safety.configs import loads

            config = loads(cfg, f"{where}: model_config")
        except (TypeError, ValueError) as e:
            raise InputError(f"{where}: model_config attribute is not valid JSON: {e}") from None
        model, notes = model_from_keras2_config(config, f"{where}: model_config")
        return model, notes
    if loaded.format == "keras3-archive" and loaded.tree.archive.config:
        return model_from_config(loaded.tree.archive.config, f"{where}: config.json"), notes
    raise InputError(
        f"{where} ({loaded.format}) does not carry its own architecture: write a spec "
        f"(`wtransplant spec {loaded.tree.path}` drafts one)")


def _transplant(spec: Spec, src: OpenedSource, loaded: LoadedSource, model, notes, *, output,
                report_path, force, progress, checksums, t0, build_s=None, undecided=()):
    """Plan, assign, check parity, save and report: what :func:`rebuild` and
    :func:`transplant` share once the model exists."""
    from wtransplant.building.keras_model import describe_targets

    timings = {} if build_s is None else {"build_s": build_s}
    source_sha = file_sha256_async(spec.source)
    t = time.perf_counter()
    targets = describe_targets(model)
    plan = _plan(spec, loaded, targets)
    timings["plan_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sums = _assign(model, plan, src, targets, progress=progress, checksums=checksums)
    timings["assign_s"] = time.perf_counter() - t

    report = RebuildReport(
        source={"path": str(spec.source), "sha256": source_sha(),
                "size": loaded.tree.file_size, "format": loaded.format,
                "writer": loaded.detection.writer, "convention": plan.convention},
        spec=spec.to_dict() if spec.model is not None or spec.weights else None,
        model=_model_summary(model, targets), plan=plan, checksums=sums, notes=notes,
        versions=versions(), backend=_backend(), undecided=list(undecided))

    t = time.perf_counter()
    check_parity(report, model, spec, src, loaded, plan)
    timings["verify_s"] = time.perf_counter() - t

    if output is not None and (report.ok or force):
        t = time.perf_counter()
        report.output = save_model(model, output)
        timings["save_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    report.timings = timings
    _write_outputs(report, report_path)
    if not report.ok:
        where = report.diagnosis.where() if report.diagnosis else ""
        raise ParityError(
            f"parity failed for {spec.source.name}: {report.parity.summary()}{where}"
            + ("" if force else "; the model was not saved (force=True saves it anyway)"),
            report=report)
    return model, report


def _plan(spec: Spec, loaded: LoadedSource, targets) -> Plan:
    """The mapping plan; the spec's and the file's reference data are not weights."""
    refs = []
    if spec.verify is not None:
        refs += ref_names(spec.verify.inputs) + ref_names(spec.verify.expected)
    _, io = split_io(loaded.tensors)
    if io:
        refs += [io["inputs"], io["expected"]]
    return make_plan(spec, loaded, targets, reference_names=tuple(refs))


def _assign(model, plan: Plan, src: OpenedSource, targets, *, progress,
            checksums: bool) -> list[dict]:
    """Read, convert and assign every planned tensor, layer by layer, one tensor in flight;
    the checksum rows. With ``checksums`` each variable is read back right after it is
    assigned and compared with the value still in hand (see :func:`_assigned`)."""
    from wtransplant.building.keras_model import layer_variables, layers_by_name

    layers = layers_by_name(model)
    src = as_source(src)
    sums = []
    groups = plan.by_layer()
    bar = _progress(len(groups), "assigning", progress)
    for lname, assigns in groups.items():
        variables = layer_variables(layers[lname])
        for a in assigns:
            v = variables[a.target.var]
            row = _assign_rows(plan, src, a, v, checksums)
            sums.append(row if row is not None else
                        _assign_whole(plan, src, a, v, lname, checksums))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    return sums


def _row(a, source_sha256: list, value_sha256: str) -> dict:
    return {"target": a.target.key, "sources": [s.name for s in a.sources],
            "source_sha256": source_sha256, "value_sha256": value_sha256}


def _assigned(row: dict, v, same: bool) -> None:
    """The row's ``assigned_sha256``: the sha256 of what variable ``v`` holds, read back.
    When it holds exactly the value's bytes (``same``, compared after assigning) that is
    ``value_sha256`` without hashing them again; otherwise it is hashed."""
    from wtransplant.building.keras_model import variable_sha256

    row["assigned_sha256"] = row["value_sha256"] if same else variable_sha256(v)
    row["assigned_matches"] = row["assigned_sha256"] == row["value_sha256"]


def _assign_whole(plan: Plan, src, a, v, lname: str, checksums: bool) -> dict:
    """Read, convert and assign one tensor as a whole array."""
    from wtransplant.building.keras_model import assign_variable, holds

    val = next(materialize(plan, src, [a], checksums=checksums))
    assign_variable(v, val.array, lname)
    row = _row(a, val.source_sha256, val.value_sha256)
    if checksums:
        _assigned(row, v, holds(v, val.array))
    return row


def _assign_rows(plan: Plan, src, a, v, checksums: bool) -> dict | None:
    """Stream one tensor that needs no conversion but maybe a cast (one source, no ops)
    into a large variable that takes row writes (TensorFlow): read, hash, scan, assign and
    read back one block of rows at a time, so the whole tensor is never held outside the
    variable. None where that does not apply (the caller assigns it whole)."""
    from wtransplant.building.keras_model import assign_rows, row_target, rows_equal

    if a.ops or len(a.sources) != 1 or not src.reads_rows:
        return None
    path, want = a.sources[0].path, np.dtype(a.target.dtype)
    stored, shape = src.stored_type(path)
    castable = stored is not None and stored.kind in "fiu" and want.kind in "fiu"
    if stored is None or (stored != want and not castable):
        return None
    target, step = row_target(v, shape, want)
    if target is None:
        return None
    h_src = array_hasher(stored, shape) if checksums else None
    h_val = array_hasher(want, shape) if checksums and stored != want else None
    same, bad = checksums, 0
    for first, block in src.iter_rows(path, want, step, hasher=h_src):
        bad += count_nonfinite(block) if want.kind == "f" else 0
        if h_val is not None:
            h_val.update(memoryview(block).cast("B"))
        assign_rows(target, first, block)
        same = same and rows_equal(target, first, block)
    if bad:
        plan.warnings.append(f"{a.target.key}: {bad} NaN/Inf values in the source")
    if not checksums:
        return _row(a, [], "")
    src_sum = h_src.hexdigest()
    row = _row(a, [src_sum], h_val.hexdigest() if h_val is not None else src_sum)
    _assigned(row, v, same)
    return row


def _model_summary(model, targets) -> dict:
    """The report's ``model``: name, class, sizes, inputs and outputs."""
    n_params = int(sum(int(np.prod(v.shape)) for v in model.weights))
    return {"name": model.name, "class": type(model).__name__,
            "layers_with_weights": len(targets),
            "variables": sum(len(t.vars) for t in targets), "parameters": n_params,
            "inputs": [list(x.shape) for x in model.inputs],
            "outputs": [list(x.shape) for x in model.outputs],
            "input_names": input_names(model), "output_names": output_names(model)}


def _write_outputs(report: RebuildReport, report_path) -> None:
    """The JSON report (if asked) and, beside a saved model, its provenance sidecar."""
    if report.output:
        from wtransplant.provenance import sidecar_of

        report.output["provenance_file"] = str(sidecar_of(report.output["path"]))
    if report_path is not None:
        write_json(report_path, report.to_dict())
    if report.output:
        _write_provenance(report, report_path)


#: samples of seeded random input for the NumPy reference check
REFERENCE_SAMPLES = 16
#: the automatic reference check runs only within these budgets (float64 NumPy is ~100x
#: slower than the framework): total multiply-adds, and bytes of the largest activation
REFERENCE_MACS = 2e9
REFERENCE_ACT_BYTES = 256 << 20


def reference_budget(model) -> int:
    """How many samples the automatic NumPy reference may use (0: too large to run by
    default), from the multiply-adds and activation sizes of one sample."""
    macs = 0
    biggest = 0
    for lay in model.layers:
        try:
            out = [int(d) for d in lay.output.shape[1:] if d is not None]
        except Exception:
            continue
        n_out = int(np.prod(out)) if out else 1
        biggest = max(biggest, n_out)
        for w in lay.weights:
            if len(w.shape) >= 2:  # a kernel: each output element costs prod(kernel[:-1])
                macs += n_out * int(np.prod(w.shape[:-1]))
                break
    per_sample_bytes = biggest * 8 * 10  # float64, and windows for the convolutions
    if macs == 0:
        return REFERENCE_SAMPLES
    n = min(REFERENCE_SAMPLES, int(REFERENCE_MACS // macs),
            int(REFERENCE_ACT_BYTES // max(per_sample_bytes, 1)))
    return max(n, 0) if n >= 2 else 0


def check_parity(report: RebuildReport, model, spec: Spec, src, loaded, plan) -> None:
    """Parity by the spec's reference data if there is any, else by the NumPy reference of
    the source's own semantics (when it covers every layer, within its cost budget); a
    failure gets a per-layer diagnosis. The reference is built only when it is used: it
    reads every source tensor again, as float64."""
    from wtransplant.checking.reference import NotCovered, build_reference

    v = spec.verify
    mode = v.reference if v is not None else "auto"
    if mode == "none":
        report.parity_note = "parity check disabled by the spec (verify.reference: none)"
        return
    has_data = v is not None and v.inputs is not None
    n_ref = REFERENCE_SAMPLES if mode == "numpy" else reference_budget(model)
    state: dict = {}

    def reference():
        if "ref" not in state:
            state["ref"], state["why"] = None, None
            if n_ref == 0:
                state["why"] = (f"the model is too large for the NumPy reference's default "
                                f"budget ({REFERENCE_MACS / 1e9:g} G multiply-adds); set "
                                f"verify.reference: numpy to run it anyway")
            else:
                try:
                    state["ref"] = build_reference(
                        model, plan, src, lazy=True,
                        spec_layers=spec.model.layers if spec.model is not None else None)
                except NotCovered as e:
                    state["why"] = str(e)
        return state["ref"]

    x = None
    if has_data and mode in ("auto", "data", "numpy"):
        x, _ = load_reference(spec, src, loaded, model)
        report.parity = _verify_with_data(model, spec, src, loaded)
    if mode == "numpy" or (mode == "auto" and not has_data):
        ref = reference()
        if ref is not None:
            from wtransplant.runtimes import random_inputs

            xr = random_inputs(model, n_ref, seed=0)
            xr = xr if len(xr) > 1 else xr[0]
            want, _ = ref.forward(xr, keep=False)
            res = compare(predict(model, xr), want, atol=v.atol if v else None,
                          rtol=v.rtol if v else None, what="NumPy reference",
                          method=f"numpy reference ({plan.convention} semantics, "
                                 f"{n_ref} seeded random samples)")
            if report.parity is None or (report.parity.passed and not res.passed):
                report.parity = res
            if report.parity is not res:
                report.parity_note = f"also checked against the {res.method}: " \
                                     f"{res.summary()}"
            if x is None:
                x = xr
    if report.parity is None:
        why = state.get("why")
        report.parity_note = ("no reference outputs and " + (
            f"the NumPy reference does not cover this model ({why})" if why else
            "no NumPy reference") + "; add verify.inputs/expected to check parity")
        return
    if not report.parity.passed:
        ref = reference()
        if ref is not None and x is not None:
            from wtransplant.checking.diagnose import diagnose

            k = max(1, n_ref)
            xd = [a[:k] for a in x] if isinstance(x, list) else x[:k]
            _, acts = ref.forward(xd)
            report.diagnosis = diagnose(model, acts, xd, method="numpy reference")
        elif state.get("why"):
            report.diagnosis = Diagnosis.unavailable(state["why"])


def _progress(n: int, what: str, progress: bool | None):
    if progress is False or n < 8:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=n, desc=what, unit="layer", disable=None if progress is None else False,
                file=sys.stderr, leave=False)


def ref_names(ref) -> list[str]:
    """The reference names in a verify entry (one, a list or a mapping)."""
    if ref is None:
        return []
    if isinstance(ref, dict):
        return list(ref.values())
    if isinstance(ref, list):
        return list(ref)
    return [ref]


def input_names(model) -> list[str]:
    return [str(getattr(t, "name", f"input_{i}")).split(":")[0]
            for i, t in enumerate(model.inputs)]


def output_names(model) -> list[str]:
    names = getattr(model, "output_names", None)
    if names and len(names) == len(model.outputs):
        return [str(n) for n in names]
    return [f"output_{i}" for i in range(len(model.outputs))]



def _named_keys(mapping: dict, names: list[str] | None, what: str) -> list[str]:
    """The order of a ``verify.inputs``/``verify.expected`` mapping: the model's own input
    or output names, which the mapping must name exactly (any order when no model)."""
    if names is None:
        return list(mapping)
    if sorted(mapping) != sorted(names):
        kind = "inputs" if what == "inputs" else "outputs"
        raise InputError(f"verify.{what} names {sorted(mapping)}, the model's {kind} are "
                         f"{names}")
    return names


def load_reference(spec: Spec, src: OpenedSource, loaded: LoadedSource, model=None):
    """The spec's reference data: x (one array, or a list in the model's input order) and
    y (one array, or a list in the model's output order)."""
    v = spec.verify

    def one(ref, what):
        return load_array(ref, base_dir=spec.base_dir, loaded=loaded, src=src)

    in_names = input_names(model) if model is not None else None
    out_names = output_names(model) if model is not None else None
    if isinstance(v.inputs, dict):
        keys = _named_keys(v.inputs, in_names, "inputs")
        x = []
        for k in keys:
            a = one(v.inputs[k], "inputs")
            # a layout names the channel axis of maps; vector inputs have none
            x.append(a if a.ndim <= 2 else to_channels_last(
                a, v.input_layout, f"verify.inputs {k}: {v.inputs[k]}"))
    else:
        x = to_channels_last(one(v.inputs, "inputs"), v.input_layout,
                             f"verify.inputs {v.inputs}")
    if isinstance(v.expected, dict):
        keys = _named_keys(v.expected, out_names, "expected")
        y = [_layout(one(v.expected[k], "expected"), v.output_layout,
                     f"verify.expected {k}") for k in keys]
    elif isinstance(v.expected, list):
        y = [_layout(one(r, "expected"), v.output_layout, f"verify.expected {r}")
             for r in v.expected]
    else:
        y = to_channels_last(one(v.expected, "expected"), v.output_layout,
                             f"verify.expected {v.expected}")
    if v.samples:
        x = [a[: v.samples] for a in x] if isinstance(x, list) else x[: v.samples]
        y = [a[: v.samples] for a in y] if isinstance(y, list) else y[: v.samples]
    return x, y


def _layout(a, layout, what):
    """Several outputs: the layout applies to the maps among them (vectors have no channel
    axis)."""
    return a if a.ndim <= 2 else to_channels_last(a, layout, what)


def predict(model, x, batch_size: int = 256):
    """Forward pass in batches, returning NumPy (one array, or a list for several outputs).
    ``x``: one array, or a list of arrays in the model's input order."""
    import keras

    xs = x if isinstance(x, list | tuple) else [x]
    n = len(xs[0])
    outs = []
    for i in range(0, n, batch_size):
        batch = [a[i:i + batch_size] for a in xs]
        y = model(batch if len(batch) > 1 else batch[0], training=False)
        if isinstance(y, list | tuple):
            outs.append([keras.ops.convert_to_numpy(t) for t in y])
        elif isinstance(y, dict):
            outs.append([keras.ops.convert_to_numpy(t) for t in y.values()])
        else:
            outs.append(keras.ops.convert_to_numpy(y))
    if outs and isinstance(outs[0], list):
        return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]
    return np.concatenate(outs) if outs else np.zeros((0,))


def _verify_with_data(model, spec: Spec, src, loaded) -> ParityResult:
    x, y = load_reference(spec, src, loaded, model)
    xs = x if isinstance(x, list) else [x]
    if len(xs) != len(model.inputs):
        raise InputError(f"verify.inputs: the model has {len(model.inputs)} inputs "
                         f"({', '.join(input_names(model))}); give a mapping input name -> "
                         f"reference")
    cast = []
    for t, a, nm in zip(model.inputs, xs, input_names(model)):
        want = tuple(int(d) if d is not None else -1 for d in t.shape[1:])
        got = tuple(a.shape[1:])
        if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
            hint = ""
            if len(got) == len(want) and sorted(got) == sorted(w for w in want if w != -1):
                hint = " (a channels-first layout? set verify.input_layout: nchw)"
            what = spec.verify.inputs if not isinstance(spec.verify.inputs, dict) else \
                f"{nm}: {spec.verify.inputs[nm]}"
            raise InputError(f"verify.inputs {what}: shape {a.shape} does not fit the "
                             f"model's input {nm} (None, {', '.join(map(str, want))}){hint}")
        xdt = t.dtype
        cast.append(a.astype(str(xdt) if str(xdt) != "None" else np.float32, copy=False))
    out = predict(model, cast if len(cast) > 1 else cast[0])
    n_out = len(model.outputs)
    if n_out > 1 and not isinstance(y, list):
        raise InputError(f"verify.expected: the model has {n_out} outputs "
                         f"({', '.join(output_names(model))}); give a list (one per output, "
                         f"in outputs order) or a mapping output name -> reference")
    res = compare(out, y, atol=spec.verify.atol, rtol=spec.verify.rtol,
                  method=f"reference data ({_desc(spec.verify.inputs)} -> "
                         f"{_desc(spec.verify.expected)})",
                  what="verify.expected")
    if n_out > 1:
        for part, nm in zip(res.outputs, output_names(model)):
            part.detail = (part.detail + " " if part.detail else "") + f"output {nm}"
    return res


def _desc(ref) -> str:
    if isinstance(ref, dict):
        return ", ".join(f"{k}={v}" for k, v in ref.items())
    if isinstance(ref, list):
        return ", ".join(ref)
    return str(ref)


# --------------------------------------------------------------------------------------


def _write_provenance(report: RebuildReport, report_path) -> None:
    """The saved model's provenance sidecar (``OUT.wtransplant.json``): the source weights'
    sha256, the spec and the rebuild report, so that ``finetune`` and ``export`` of OUT
    name the original weights without being told."""
    from wtransplant.provenance import write_sidecar

    rr = {"path": None, "sha256": None,
          "parity": report.parity.max_rel if report.parity is not None else None,
          "verified": report.verified, "unverified_reason": report.unverified_reason}
    if report_path is not None:
        rr.update(path=str(report_path), sha256=file_sha256(Path(report_path)))
    write_sidecar(report.output["path"], source=report.source, spec=report.spec,
                  rebuild_report=rr)


def save_model(model, output: str | os.PathLike) -> dict:
    """Save as ``.keras`` (default) or legacy ``.h5``, to a temporary name first."""
    out = Path(output)
    suffix = out.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"output {out}: use a .keras (Keras 3 archive) or .h5 (legacy HDF5) "
                         f"file name; for SavedModel or ONNX use `wtransplant export`")
    from wtransplant.runtimes.keras import save_model_file

    with atomic_path(out) as tmp:
        save_model_file(model, tmp)
    return {"path": str(out), "format": "keras" if suffix == ".keras" else "h5",
            "size": out.stat().st_size, "size_text": fmt_bytes(out.stat().st_size)}


__all__ = ["RebuildReport", "UndecidedError", "check_decided", "rebuild", "rebuild_file",
           "transplant", "save_model", "predict", "ModelSpec"]
