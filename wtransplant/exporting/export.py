"""``wtransplant export``: write a Keras model as ``.keras``, ``.h5``, SavedModel, ONNX or
LiteRT, reload each file in its own runtime and check it computes what the model computes.

Library use::

    report = export_model("net.keras", "onnx", "net.onnx")     # or fmt="all", output=DIR
    report.results[0].parity[0].max_rel, report.results[0].latency

Every output is written under a temporary name in the destination folder, reloaded
(Keras, ``tf.saved_model.load``, onnxruntime, the LiteRT interpreter), compared with the
source model on the same seeded random inputs at two batch sizes, and renamed to its final
name only if it passes: a parity failure raises :class:`ParityError` (exit 1) and leaves
nothing new under the final name. A model that a converter cannot express raises
:class:`InputError` (exit 2) naming the layer.

The formats, their writers and loaders are the registry's (:mod:`wtransplant.runtimes`,
one module per runtime; see docs/export.md for the routes); this module loops over them.
Under a Keras backend other than TensorFlow, formats that TensorFlow traces are written by
TensorFlow in a child process (:mod:`._tfexport`).

Layer 3 through the runtimes: TensorFlow, tf2onnx, onnx and onnxruntime are imported inside
their functions.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wtransplant.atomic import atomic_path, write_json
from wtransplant.checking.parity import compare
from wtransplant.errors import InputError, ParityError, one_line
from wtransplant.quiet_tf import install as _quiet_tf
from wtransplant.quiet_tf import quiet_logs, quiet_stderr
from wtransplant.reading.h5io import fmt_bytes
from wtransplant.runtimes import (
    Artifact,
    Format,
    Unsupported,
    export_formats,
    get,
    load_artifact,
    random_inputs,
)
from wtransplant.runtimes.keras import KerasArtifact

_quiet_tf()  # before TensorFlow or tf2onnx is imported: no TensorFlow log lines on stderr

#: the formats export writes, in the order ``--format all`` writes them (the registry's)
FORMATS = export_formats()
#: file names inside the folder of ``--format all``
ALL_NAMES = {f: get(f).all_name for f in FORMATS}
ALL_REPORT = "export-report.json"
#: default tolerances of the export check (NumPy's allclose rule, elementwise:
#: |exported - keras| <= atol + rtol * |keras|); atol None means DEFAULT_ATOL_SCALE times the
#: output's largest magnitude (at least DEFAULT_ATOL_SCALE): random inputs of unit scale
#: can give outputs of any scale, and a kernel's rounding grows with it
DEFAULT_ATOL_SCALE = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_BATCH_SIZE = 16
DEFAULT_SAMPLES = DEFAULT_BATCH_SIZE  # the earlier name
DEFAULT_SECOND_BATCH = 3
DEFAULT_REPEATS = 20
#: stop timing a runtime after this many seconds even if fewer repeats were done
LATENCY_BUDGET_S = 3.0


# --------------------------------------------------------------------------------------
# report


@dataclass
class BatchParity:
    """One batch compared output by output (each against its own scale)."""

    batch: int
    outputs: dict  # output name -> ParityResult
    passed: bool
    max_abs: float
    max_rel: float

    def to_dict(self) -> dict:
        return {"batch": self.batch, "passed": self.passed, "max_abs": self.max_abs,
                "max_rel": self.max_rel,
                "outputs": {k: v.to_dict() for k, v in self.outputs.items()}}

    def summary(self) -> str:
        return (f"batch {self.batch}: max rel err {self.max_rel:.2g}, max abs err "
                f"{self.max_abs:.2g} {'OK' if self.passed else 'FAILED'}")


@dataclass
class FormatResult:
    format: str
    path: str
    runtime: str
    size: int = 0
    parity: list[BatchParity] = field(default_factory=list)
    verified: bool = False
    latency: dict | None = None
    provenance_file: str | None = None
    opset: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.parity)

    @property
    def max_rel(self) -> float | None:
        return max((p.max_rel for p in self.parity), default=None)

    def to_dict(self) -> dict:
        return {"format": self.format, "path": self.path, "runtime": self.runtime,
                "size": self.size, "size_text": fmt_bytes(self.size),
                "verified": self.verified, "passed": self.passed if self.verified else None,
                "max_rel": self.max_rel, "parity": [p.to_dict() for p in self.parity],
                "latency": self.latency, "provenance_file": self.provenance_file,
                "opset": self.opset, "notes": self.notes, "seconds": round(self.seconds, 3)}


@dataclass
class ExportReport:
    model: dict
    provenance: dict
    settings: dict
    results: list[FormatResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keras_latency: dict | None = None

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {"wtransplant_report": "export", "model": self.model,
                "provenance": self.provenance, "settings": self.settings,
                "results": [r.to_dict() for r in self.results], "skipped": self.skipped,
                "notes": self.notes, "keras_latency": self.keras_latency}


# --------------------------------------------------------------------------------------
# entry point


def export_model(model, fmt: str, output: str | os.PathLike, *, verify: bool = True,
                 opset: int | None = None, provenance: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, second_batch: int = DEFAULT_SECOND_BATCH,
                 seed: int = 0, atol: float | None = None, rtol: float = DEFAULT_RTOL,
                 repeats: int = DEFAULT_REPEATS, report_path: str | os.PathLike | None = None,
                 progress: bool | None = None,
                 rebuild_report: str | os.PathLike | None = None) -> ExportReport:
    """Export ``model`` (a path wtransplant can load, a Keras model, or a KerasArtifact) to
    ``fmt`` (one of FORMATS, or ``all``: every format into the folder ``output``).

    Args:
        model: a ``.keras``/``.h5`` file, a spec, a ``keras.Model`` or a KerasArtifact.
        fmt: ``keras``, ``h5``, ``savedmodel``, ``onnx``, ``tflite`` or ``all``.
        output: the file (or folder, for ``savedmodel`` and ``all``) to write.
        verify: reload the written file in its own runtime and compare it with the model
            before giving it its final name.
        opset: ONNX opset (default: the highest tf2onnx writes).
        provenance: a rebuild or finetune report (JSON) of ``model``, whose source weights'
            sha256 and spec go into the exported file's provenance. Default: what ``model``
            carries itself (its ``.wtransplant.json`` sidecar, written by rebuild and
            finetune). ``rebuild_report`` is the earlier name.
        batch_size, second_batch: sizes of the two checked batches of seeded random inputs.
        seed: seed of those inputs.
        atol, rtol: each output passes if |exported - keras| <= atol + rtol * |keras|
            elementwise (NumPy's allclose); ``atol=None``: 1e-5 times the output's largest
            magnitude (at least 1e-5).
        repeats: timed runs per runtime (the median is reported).
        report_path: where to write the export report (JSON).
        progress: show progress (None: on a terminal only).

    Returns:
        The :class:`ExportReport` (one result per format written, with its parity and
        latency, and the provenance).

    Raises:
        InputError: bad model, format, output path or option value; a layer the converter
            cannot handle (exit 2).
        ParityError: a written file computes something else; it is not kept (exit 1).
    """
    fmt, targets = plan_outputs(model, fmt, output)
    options = {"opset": opset}
    for f, _ in targets:
        get(f).check_options(options)
    taken = {o for f, _ in targets for o in get(f).options}
    if batch_size < 1 or second_batch < 1:
        raise InputError(f"batch_size and second_batch must be at least 1, got {batch_size} "
                         f"and {second_batch}")
    for name, v in (("atol", atol), ("rtol", rtol)):
        if v is not None and not v >= 0:
            raise InputError(f"{name} must be 0 or more, got {v}")
    if provenance is None:
        provenance = rebuild_report
    src = source_artifact(model)
    prov = build_provenance(src, provenance)
    settings = {"verify": verify, "batch_size": batch_size, "second_batch": second_batch,
                "seed": seed, "atol": atol, "rtol": rtol,
                "atol_rule": ("given" if atol is not None else
                              f"{DEFAULT_ATOL_SCALE:g} x max |keras output|"),
                "repeats": repeats, "opset": options["opset"] if "opset" in taken else None}
    report = ExportReport(model=prov["model"], provenance=prov, settings=settings,
                          notes=list(src.notes))
    out = Path(output)
    check = None
    if verify:
        check = _Reference(src, batch_size, second_batch, seed, atol, rtol, repeats)
        report.keras_latency = check.keras_latency
    bar = _bar(len(targets), progress)
    with quiet_logs("tf2onnx", "tensorflow", "absl", level=logging.CRITICAL):
        for f, path in targets:
            if bar is not None:
                bar.set_description(f"exporting {f}")
            try:
                res = export_one(src, f, path, prov, check, **options)
            except Unsupported as e:
                if fmt != "all":
                    raise
                reason = str(e)
                if path.exists():
                    reason += f"; an earlier {path} is left as it was, not from this export"
                report.skipped.append({"format": f, "reason": reason})
            except ParityError as e:
                if e.report is not None:
                    report.results.append(e.report)
                _finish(report, out, fmt, report_path)
                e.report = report
                raise
            else:
                report.results.append(res)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    _finish(report, out, fmt, report_path)
    return report


def _finish(report: ExportReport, out: Path, fmt: str, report_path) -> None:
    if fmt == "all" and report.results:
        write_json(out / ALL_REPORT, report.to_dict())
    if report_path is not None:
        write_json(report_path, report.to_dict())


def plan_outputs(model, fmt: str, output) -> tuple[str, list[tuple[str, Path]]]:
    """Check the request before anything heavy is imported: the format, the output name,
    and (for a path) that MODEL is something export can read. Returns the normalised format
    and the (format, path) pairs to write."""
    fmt = str(fmt).lower()
    names = export_formats()
    if fmt != "all" and fmt not in names:
        raise InputError(f"unknown export format {fmt!r}: use one of {', '.join(names)} "
                         f"or all")
    if isinstance(model, str | os.PathLike):
        from wtransplant.runtimes import precheck

        kind = get(precheck(model))
        if not kind.keras_source:
            raise InputError(f"{kind.text}: export needs a Keras model "
                             f"(.keras, .h5 or a spec); compare it with `wtransplant verify` "
                             f"instead", path=str(model))
    out = Path(output)
    if fmt == "all":
        if out.exists() and not out.is_dir():
            raise InputError("format all writes a folder, but this is a file", path=str(out))
        targets = [(f, out / get(f).all_name) for f in names]
    else:
        get(fmt).check_output_name(out)
        targets = [(fmt, out)]
    from wtransplant.safety.paths import check_targets

    check_targets(targets, model)
    return fmt, targets


def check_output_name(fmt: str, out: Path) -> None:
    """Refuse an output name ``fmt`` cannot be written under."""
    get(fmt).check_output_name(out)


def source_artifact(model) -> KerasArtifact:
    """The Keras model to export: a path (``.keras``, ``.h5``, a spec), a Keras model or a
    KerasArtifact."""
    if isinstance(model, KerasArtifact):
        return model
    if isinstance(model, Artifact):
        raise InputError(f"{model.display} is {_text(model.kind)}: export "
                         f"needs a Keras model (.keras, .h5 or a spec)")
    if isinstance(model, str | os.PathLike):
        plan_outputs(model, "keras", "x.keras")  # refuses SavedModel, ONNX, LiteRT
        return load_artifact(model)
    from wtransplant.runtimes.keras import from_model

    return from_model(model)


def _text(kind: str) -> str:
    try:
        return get(kind).text
    except InputError:
        return kind


# --------------------------------------------------------------------------------------
# provenance


def export_versions() -> dict:
    from wtransplant.building.transplanting import versions
    from wtransplant.runtimes.onnx import version

    v = versions()
    for pkg in ("tf2onnx", "onnx", "onnxruntime"):
        v[pkg] = version(pkg)
    return v


def build_provenance(src: KerasArtifact, report=None) -> dict:
    """Where the exported weights come from: the MODEL file's own sha256 always; the
    source weights' sha256 and the spec from ``report`` (a rebuild or finetune report
    JSON), else from a rebuild done while loading (Keras 2 H5, spec) or from what MODEL
    carries (its ``.wtransplant.json`` sidecar, written by rebuild, finetune or export)."""
    from wtransplant.provenance import file_sha256, read_report

    model = {"path": str(src.path) if src.path else None, "kind": src.kind,
             "sha256": None, "name": src.keras_model.name,
             "parameters": int(src.keras_model.count_params()),
             "inputs": [t.to_dict() for t in src.inputs],
             "outputs": [t.to_dict() for t in src.outputs]}
    on_disk = src.path is not None and Path(src.path).is_file()
    if on_disk:
        model["sha256"] = file_sha256(Path(src.path))
    prov = {"wtransplant_provenance": 1, "model": model, "source": None, "spec": None,
            "rebuild_report": None, "finetune": [], "derived_from": None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": export_versions()}
    carried = src.provenance or {}
    mf = carried.get("model_file") if isinstance(carried.get("model_file"), dict) else {}
    if carried and mf.get("sha256") and model["sha256"] and mf["sha256"] != model["sha256"]:
        prov.setdefault("warnings", []).append(
            f"the provenance file next to {src.path} describes another file (sha256 "
            f"{str(mf['sha256'])[:12]}...): not used")
        carried = {}
    if carried:
        prov["source"] = carried.get("source")
        prov["spec"] = carried.get("spec")
        prov["rebuild_report"] = carried.get("rebuild_report")
        prov["finetune"] = list(carried.get("finetune") or [])
        if carried.get("model"):  # MODEL was itself exported by wtransplant
            prov["derived_from"] = carried.get("model")
    if report is not None:
        rr = read_report(report)
        prov["source"] = rr["source"]
        prov["spec"] = rr.get("spec")
        prov["rebuild_report"] = rr.get("rebuild_report")
        prov["finetune"] = rr.get("finetune") or []
        prov["report"] = {"path": str(report), "kind": rr["kind"],
                          "sha256": rr["report"]["sha256"]}
        out = rr["report"].get("output") or {}
        if on_disk and out.get("sha256") and out["sha256"] != model["sha256"]:
            prov.setdefault("warnings", []).append(
                f"the {rr['kind']} report's output ({out.get('path')}) is not {src.path} "
                f"(sha256 differs): the report may describe another model")
        elif on_disk and not out.get("sha256") and out.get("size") is not None and \
                Path(src.path).stat().st_size != out["size"]:
            prov.setdefault("warnings", []).append(
                f"the {rr['kind']} report's output ({out.get('path')}, {out['size']} bytes) "
                f"is not the size of {src.path}: the report may describe another model")
    return prov


def read_rebuild_report(path) -> dict:
    """A rebuild or finetune report as provenance (see :func:`wtransplant.provenance.
    read_report`)."""
    from wtransplant.provenance import read_report

    return read_report(path)


# --------------------------------------------------------------------------------------
# one format


def export_one(src: KerasArtifact, fmt: str, out: Path, prov: dict, check,
               **options) -> FormatResult:
    """Write one format under a temporary name, reload and check it (``check``: a
    :class:`_Reference`, or None), give it its final name, place its provenance."""
    t0 = time.perf_counter()
    f = get(fmt)
    res = FormatResult(format=fmt, path=str(out), runtime=f.runtime)
    existed = out.exists()
    try:
        with atomic_path(out, directory=f.folder) as tmp:
            if f.folder:
                tmp.mkdir()
            info = writer_for(fmt)(src, tmp, prov, **options)
            res.opset = info.get("opset")
            res.notes += info.get("notes", [])
            res.size = _size(tmp)
            if check is not None:
                _check_written(f, src, tmp, out, res, check, existed)
            where = f.place_provenance(tmp, out, _sidecar(prov, fmt, out, res), renamed=False)
    except ParityError:
        res.seconds = time.perf_counter() - t0
        raise
    where = f.place_provenance(out, out, _sidecar(prov, fmt, out, res), renamed=True) or where
    res.provenance_file = where
    res.verified = check is not None
    res.seconds = time.perf_counter() - t0
    return res


def _check_written(f: Format, src: KerasArtifact, tmp: Path, out: Path, res: FormatResult,
                   check, existed: bool) -> None:
    """Reload the file written at ``tmp`` in its runtime, compare it with the model and
    time it; InputError if it does not load, ParityError if it computes something else."""
    try:
        art = f.reload(tmp)
    except InputError as e:
        why = str(e).replace(f"{tmp}: ", "").replace(str(tmp), str(out))
        full = e.detail.get("error", why)
        where = f.load_failure_detail(tmp, full, src)
        raise InputError(f"{src.display}: the {f.name} file converted for {out} does "
                         f"not load in {res.runtime}{where}, so it was not "
                         f"written: {why}") from None
    check.verify(art, res)
    if not res.passed:
        worst = max(res.parity, key=lambda p: p.max_rel)
        keep = (f"; the earlier {out} is left as it was" if existed else "")
        raise ParityError(
            f"{f.name} export of {src.display}: parity failed in {res.runtime}: "
            f"{worst.summary()} (allowed {check.allowed()}); "
            f"{out} was not written{keep}", report=res)
    res.latency = check.latency(art)
    art.close()


def _sidecar(prov: dict, fmt: str, out: Path, res: FormatResult) -> dict:
    d = dict(prov)
    d["export"] = {"format": fmt, "file": out.name, "runtime": res.runtime,
                   "verified": bool(res.parity), "max_rel": res.max_rel,
                   "parity": [p.to_dict() for p in res.parity]}
    d["inputs"] = prov["model"]["inputs"]
    d["outputs"] = prov["model"]["outputs"]
    return d


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def reload(fmt: str, path: Path) -> Artifact:
    """Load a written file in the runtime its format is for (no fallbacks)."""
    return get(fmt).reload(path)


# --------------------------------------------------------------------------------------
# verification and timing


class _Reference:
    """The source model's outputs on seeded random inputs at two batch sizes, and its own
    latency on the first batch."""

    def __init__(self, src: KerasArtifact, samples: int, second: int, seed: int,
                 atol: float | None, rtol: float, repeats: int):
        self.src = src
        self.atol = atol
        self.rtol = rtol
        self.repeats = repeats
        self.batches = [random_inputs(src, samples, seed)]
        if second != samples:
            self.batches.append(random_inputs(src, second, seed + 1))
        self.expected = [src.predict(x) for x in self.batches]
        x0 = self.batches[0]
        with quiet_stderr():
            ms, n = median_ms(src.runner(x0), repeats)
        self.keras_latency = {"runtime": "keras (predict_on_batch)", "batch": len(x0[0]),
                              "median_ms": ms, "repeats": n}

    def feed(self, art: Artifact, xs: list[np.ndarray]):
        names = self.src.input_names
        return dict(zip(names, xs)) if sorted(art.input_names) == sorted(names) else xs

    def verify(self, art: Artifact, res: FormatResult) -> None:
        names = self.src.output_names
        for xs, want in zip(self.batches, self.expected):
            got = art.predict(self.feed(art, xs))
            if len(got) != len(want):
                raise ParityError(f"{art.display}: the exported model has {len(got)} outputs, "
                                  f"the source model {len(want)}")
            if sorted(art.output_names) == sorted(names):
                by = dict(zip(art.output_names, got))
                got = [by[n] for n in names]
            else:
                res.notes.append(f"output names differ ({', '.join(art.output_names)} vs "
                                 f"{', '.join(names)}): compared in order")
            res.parity.append(batch_parity(got, want, names, self.atol, self.rtol,
                                           f"{art.runtime} vs keras"))

    def allowed(self) -> str:
        a = f"atol {self.atol:g}" if self.atol is not None else \
            f"atol {DEFAULT_ATOL_SCALE:g} x max |keras|"
        return f"|exported - keras| <= {a} + rtol {self.rtol:g} x |keras|"

    def latency(self, art: Artifact) -> dict:
        xs = art.check_inputs(self.feed(art, self.batches[0]))
        with quiet_stderr():
            ms, n = median_ms(art.runner(xs), self.repeats)
        return {"runtime": art.runtime, "batch": len(xs[0]), "median_ms": ms, "repeats": n,
                "keras_median_ms": self.keras_latency["median_ms"]}


def batch_parity(got: list, want: list, names: list[str], atol: float | None, rtol: float,
                 method: str) -> BatchParity:
    """Each output passes if |a - e| <= atol + rtol * |e| elementwise (NumPy's allclose);
    ``atol=None``: DEFAULT_ATOL_SCALE times the output's largest magnitude (at least
    DEFAULT_ATOL_SCALE)."""
    outs = {}
    for name, a, e in zip(names, got, want):
        a_out = atol
        if a_out is None:
            scale = float(np.max(np.abs(e))) if np.size(e) else 0.0
            a_out = DEFAULT_ATOL_SCALE * max(scale, 1.0)
        outs[name] = compare(a, e, atol=a_out, rtol=rtol, method=method,
                             what=f"output {name}")
    return BatchParity(batch=int(len(want[0])), outputs=outs,
                       passed=all(r.passed for r in outs.values()),
                       max_abs=max(r.max_abs for r in outs.values()),
                       max_rel=max(r.max_rel for r in outs.values()))


def median_ms(fn, repeats: int, budget_s: float = LATENCY_BUDGET_S) -> tuple[float, int]:
    """Median wall time of ``fn()`` in milliseconds over up to ``repeats`` runs (after two
    warm-up runs), stopping early once ``budget_s`` is spent. Returns (median, runs)."""
    fn()
    fn()
    times = []
    start = time.perf_counter()
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() - start > budget_s and len(times) >= 3:
            break
    return float(statistics.median(times)), len(times)


# -- other Keras backends ------------------------------------------------------------------

# Formats that TensorFlow writes (``traced_by_tensorflow``: it traces the model's call as
# a tf.function) are written under another backend by TensorFlow in a child process from
# the model saved as ``.keras``, except under a format's ``native_backends``, whose Keras
# writes it itself (``keras.export.ExportArchive`` converts a JAX model with jax2tf).
#: seconds the child may take to start TensorFlow, load and write (a hang is a bug)
CHILD_TIMEOUT_S = 1800


def keras_backend() -> str:
    import keras

    return keras.backend.backend()


def writer_for(fmt: str, backend: str | None = None):
    """The writer of ``fmt`` under the running Keras backend: the TensorFlow writers in
    this process under TensorFlow (and where Keras converts the model itself), else
    :func:`_write_in_tensorflow`."""
    backend = backend or keras_backend()
    f = get(fmt)
    if backend == "tensorflow" or not f.traced_by_tensorflow:
        return f.write
    if backend in f.native_backends:
        return lambda src, tmp, prov, **kw: _native_then_child(fmt, src, tmp, prov, **kw)
    return lambda src, tmp, prov, **kw: _write_in_tensorflow(fmt, src, tmp, prov, **kw)


def _native_then_child(fmt: str, src: KerasArtifact, tmp: Path, prov: dict, **kw) -> dict:
    """Keras' own conversion (jax2tf) first; if it cannot express the model, TensorFlow
    in a child process from the saved ``.keras``."""
    import shutil

    try:
        return get(fmt).write(src, tmp, prov, **kw)
    except Unsupported:
        raise  # the converter's verdict: the same in a child
    except InputError as e:
        first = str(e)
    if tmp.is_dir():  # a SavedModel folder, maybe half written: start it again empty
        shutil.rmtree(tmp)
        tmp.mkdir()
    elif tmp.exists():
        tmp.unlink()
    info = _write_in_tensorflow(fmt, src, tmp, prov, **kw)
    info["notes"].insert(0, f"Keras' own {keras_backend()} export failed "
                            f"({first[:200]}); TensorFlow wrote it instead")
    return info


def _write_in_tensorflow(fmt: str, src: KerasArtifact, tmp: Path, prov: dict, *,
                         opset: int | None = None, **_) -> dict:
    """Write ``fmt`` with TensorFlow in a child process (KERAS_BACKEND=tensorflow) from
    the model saved as a ``.keras`` archive, which every backend reads alike."""
    import subprocess

    from wtransplant.quiet_tf import TF_ENV
    from wtransplant.runtimes.keras import save_model_file

    backend = keras_backend()
    with tempfile.TemporaryDirectory(prefix="wt-export-") as d:
        arch = Path(d) / "model.keras"
        try:
            save_model_file(src.keras_model, arch)
        except Exception as e:
            raise InputError(f"{src.display}: Keras ({backend}) could not save the model as "
                             f".keras for TensorFlow to write {fmt}: {one_line(e)}; export "
                             f"it under KERAS_BACKEND=tensorflow") from None
        job = {"format": fmt, "model": str(arch), "output": str(tmp), "display": src.display,
               "kind": src.kind, "opset": opset, "provenance": prov}
        (Path(d) / "job.json").write_text(json.dumps(job, default=str), encoding="utf-8")
        env = dict(os.environ, KERAS_BACKEND="tensorflow")
        for k, v in TF_ENV.items():
            env.setdefault(k, v)
        try:
            r = subprocess.run([sys.executable, "-m", "wtransplant.exporting._tfexport",
                                str(Path(d) / "job.json")], capture_output=True, text=True,
                               env=env, timeout=CHILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise InputError(f"{src.display}: TensorFlow did not finish writing the {fmt} "
                             f"file within {CHILD_TIMEOUT_S} s; export it under "
                             f"KERAS_BACKEND=tensorflow") from None
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        why = one_line(RuntimeError(r.stderr.strip().splitlines()[-1])) \
            if r.stderr.strip() else f"exit code {r.returncode}"
        raise InputError(f"{src.display}: TensorFlow, run to write {fmt} for the {backend} "
                         f"backend, failed ({why}); export it under "
                         f"KERAS_BACKEND=tensorflow") from None
    if not out.get("ok"):
        cls = out.get("class")
        if out.get("unsupported"):
            raise Unsupported(out["error"])
        if cls == "internal":
            raise InputError(f"{src.display}: TensorFlow could not write {fmt} from the "
                             f"{backend} model ({out['error']}); export it under "
                             f"KERAS_BACKEND=tensorflow")
        raise InputError(out["error"])
    info = dict(out.get("info") or {})
    info["notes"] = list(info.get("notes") or []) + [
        f"written by TensorFlow in a child process from the model saved as .keras (Keras "
        f"backend {backend}); checked against the {backend} model"]
    return info


# --------------------------------------------------------------------------------------
# plumbing


def _bar(n: int, progress: bool | None):
    if progress is False or n < 2:
        return None
    from tqdm import tqdm

    return tqdm(total=n, unit="format", file=sys.stderr, leave=False,
                disable=None if progress is None else False)


__all__ = ["export_model", "ExportReport", "FormatResult", "BatchParity", "FORMATS",
           "reload", "build_provenance", "median_ms", "batch_parity", "writer_for"]
