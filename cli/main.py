"""The ``wtransplant`` command: parse, call one library function, print, map errors to exit
codes (0 ok, 1 parity failed, 2 bad input, 3 internal error). Library modules are
imported inside each command so ``wtransplant inspect`` never loads TensorFlow or Keras.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from wtransplant.errors import EXIT_INTERNAL, UnsafeInputError, WTError

from .quiet import choose_backend, import_keras
from .watchdog import DEFAULT_TIMEOUT, guarded

DEBUG = bool(os.environ.get("WTRANSPLANT_DEBUG"))


def _err(msg: str) -> None:
    click.echo(f"wtransplant: error: {msg}", err=True)


def _abs_ref(ref: str) -> str:
    """A reference from the command line (``FILE`` or ``FILE:key``) made absolute, since a
    spec resolves its own references against the spec's folder."""
    from pathlib import Path

    head, sep, key = ref.rpartition(":")
    if sep and head and Path(head).exists():
        return f"{Path(head).resolve()}:{key}"
    return str(Path(ref).resolve())


def handle_errors(fn):
    """Every user-caused problem becomes one line on stderr and its exit code; anything else
    is an internal error (exit 3), with a traceback only under WTRANSPLANT_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except WTError as e:
            if DEBUG:
                raise
            _err(_cli_words(str(e)))
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            _err("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (`wtransplant inspect F | head`): stop quietly, and keep
            # Python from complaining again when it flushes stdout at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        except click.exceptions.Exit:
            raise
        except (click.ClickException, click.Abort):
            raise
        except MemoryError:
            _err("out of memory")
            sys.exit(EXIT_INTERNAL)
        except Exception as e:  # a bug in wtransplant: say so, in one line
            if DEBUG:
                raise
            msg = " ".join(str(e).split())[:300]
            _err(f"internal error: {type(e).__name__}: {msg} (set WTRANSPLANT_DEBUG=1 for a "
                 f"traceback, and please report it)")
            sys.exit(EXIT_INTERNAL)

    return wrapper


# One vocabulary for every command (docs/cli.md): --report PATH writes a JSON report;
# --provenance PATH reads a previous report; --atol/--rtol are NumPy's allclose rule
# (|a - b| <= atol + rtol * |b|); --samples N uses the first N samples; --batch-size N is a
# batch size; --quiet prints no progress and no human-readable report (errors still go to
# stderr, the exit code still tells); --json prints the report as one JSON object.
TOL = click.FloatRange(min=0)
COUNT = click.IntRange(min=1)


def report_option(help_text: str = "Write the JSON report here."):
    return click.option("--report", "report_path", type=click.Path(dir_okay=False),
                        help=help_text)


def quiet_option():
    return click.option("--quiet", "-q", is_flag=True,
                        help="No progress and no human-readable report on stdout (errors "
                             "still go to stderr; the exit code tells the result).")


def json_option():
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the report as one JSON object.")


def _report_not_an_input(report_path, *inputs) -> None:
    """``--report PATH`` must not overwrite an input (or the model being written)."""
    if not report_path:
        return
    from pathlib import Path

    from wtransplant.errors import InputError

    rp = Path(report_path).resolve()
    for p in inputs:
        if p and Path(p).resolve() == rp:
            raise InputError(f"--report {report_path} is also an input or output of this "
                             f"command: give another file name")


def _deprecated(old: str, new: str) -> None:
    click.echo(f"wtransplant: warning: {old} is deprecated; use {new}", err=True)


#: library keyword arguments that library messages name, and the options that set them
_KWARG_FLAGS = {"force=True": "--force", "follow_links=True": "--follow-links"}


def _cli_words(msg: str) -> str:
    """A library message in the command's words: keyword arguments become options (library
    messages never name command-line options)."""
    for kw, flag in _KWARG_FLAGS.items():
        msg = msg.replace(f"pass {kw}", f"pass {flag}").replace(kw, flag)
    return msg


def emit_json(obj) -> None:
    from wtransplant.atomic import dumps

    click.echo(dumps(obj))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wtransplant")
def main():
    """Move trained weights out of HDF5 files (PyTorch, MATLAB/Octave, Keras 2, home-made
    layouts) into working Keras 3 models, exactly."""
    from wtransplant.safety.paths import guard_all_outputs  # no output replaces an input

    guard_all_outputs()
    click.get_current_context().call_on_close(lambda: guard_all_outputs(False))


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@report_option("Also write the JSON object (as --json prints it) here.")
@quiet_option()
@click.option("--stats", is_flag=True,
              help="Add min/max/mean/std and NaN/Inf counts per tensor (read chunk by chunk).")
@click.option("--filter", "pattern", metavar="GLOB",
              help="Show only datasets whose path or name matches GLOB (e.g. '*.weight').")
@click.option("--depth", type=click.IntRange(min=0), metavar="N",
              help="Show groups down to depth N only.")
@click.option("--follow-links", is_flag=True,
              help="Follow external links and virtual datasets into other files.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help=f"Give up after this long (default {DEFAULT_TIMEOUT}; 0: no limit). A "
                   f"damaged file can make the HDF5 library loop forever.")
@guarded("reading the file")
@handle_errors
def inspect(file, as_json, report_path, quiet, stats, pattern, depth, follow_links, timeout):
    """Show FILE's tree, shapes, dtypes, attributes, the program that wrote it and the
    architecture its tensors imply. Never imports TensorFlow or Keras."""
    from wtransplant.reading.inspecting import inspect_file
    from wtransplant.reading.tree import gc_paused

    _report_not_an_input(report_path, file)
    report = inspect_file(file, stats=stats, follow_links=follow_links, stats_filter=pattern)
    if report_path:
        from wtransplant.atomic import write_json

        write_json(report_path, report.to_dict())
    with gc_paused():  # printing a large tree allocates as many small objects as the walk
        if as_json:
            emit_json(report.to_dict())
        elif not quiet:
            from .render import print_inspect

            print_inspect(report, pattern=pattern, depth=depth)
    if report.outside:
        more = f" (and {len(report.outside) - 1} more)" if len(report.outside) > 1 else ""
        raise UnsafeInputError(f"{report.outside[0]}{more}: data outside the file, not "
                               f"followed; pass --follow-links to follow", path=file)


@main.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the draft here (default: print it).")
@click.option("--inputs", metavar="X",
              help="Reference inputs (.npy, data.npz:key, data.h5:dataset; NAME=FILE for a "
                   "named input): settle the draft's choices against them.")
@click.option("--expected", multiple=True, metavar="Y",
              help="The source model's outputs for --inputs (once per output).")
@click.option("--input-layout", type=click.Choice(["nchw", "ncl", "ncdhw", "none"]),
              help="Layout of the stored inputs if channels-first.")
@report_option("Write the JSON report (every settled choice and its evidence) here.")
@json_option()
@quiet_option()
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help=f"Give up after this long (default {DEFAULT_TIMEOUT}; 0: no limit).")
@guarded("reading the file")
@handle_errors
def spec(file, output, inputs, expected, input_layout, report_path, as_json, quiet, timeout):
    """Write a draft spec (YAML) for FILE: the implied layer stack, the weights mapping, the
    convention, and verify entries if FILE holds reference data. What the tensors cannot
    tell is a guess, written as {undecided: [candidates...], why: ...}. With --inputs and
    --expected every such choice is settled against the data and written as a plain value
    with its evidence; a tie stays undecided and says which data would split it."""
    from pathlib import Path

    from wtransplant.errors import InputError
    from wtransplant.planning.draft import draft_spec

    if bool(inputs) != bool(expected):
        raise InputError("give both --inputs and --expected")
    from wtransplant.checking.data import split_ref

    data_files = [split_ref(r.partition("=")[2] if "=" in r and not Path(r).exists() else r)[0]
                  for r in ([inputs] if inputs else []) + list(expected)]
    _report_not_an_input(report_path, file, output, *data_files)
    if output and any(Path(p).resolve() == Path(output).resolve()
                      for p in [file, *data_files]):
        raise InputError(f"-o {output} is also an input of this command: give another file "
                         f"name")
    from wtransplant.safety.paths import check_output

    check_output(output, [file, *data_files])  # symlinks and hard links too
    kw = {}
    if inputs:
        if "=" in inputs and not Path(inputs).exists():
            name, _, ref = inputs.partition("=")
            inputs = {name: ref}
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        kw = {"inputs": inputs, "expected": list(expected), "input_layout": input_layout,
              # the search stops in time to write what it settled before --timeout
              "budget_s": 0.8 * limit if limit else None}
        if not quiet and not as_json:
            import time

            last = [time.monotonic()]

            def progress(msg: str) -> None:  # at most one line every 2 s
                if time.monotonic() - last[0] >= 2.0:
                    last[0] = time.monotonic()
                    msg = "".join(ch if ch.isprintable() else "?" for ch in msg)
                    click.echo(f"settling: {msg[:200]}", err=True)

            kw["progress"] = progress
    d = draft_spec(file, spec_dir=Path(output).parent if output else None, **kw)
    if output:
        from wtransplant.atomic import atomic_path

        with atomic_path(output) as tmp:
            tmp.write_text(d.text, encoding="utf-8")
        if not quiet:
            click.echo(f"wrote {output}", err=True)
    elif not as_json:
        click.echo(d.text, nl=False)
    report = None
    if d.report is not None:
        report = {"file": str(file), "output": output, **d.report}
    if report_path:
        from wtransplant.atomic import write_json

        write_json(report_path, report or {"file": str(file), "output": output,
                                           "choices": [], "todo": d.todo, "notes": d.notes})
    if as_json:
        emit_json(report or {"file": str(file), "output": output, "choices": [],
                             "todo": d.todo, "notes": d.notes})
    if quiet:
        return
    if d.report is not None:
        from .render import print_settled

        print_settled(d.report)
    if d.todo:
        click.echo(f"{len(d.todo)} choice(s) in the draft are marked {{undecided: [...]}}: "
                   f"`wtransplant rebuild` refuses the spec until each is decided (or "
                   f"--force, and the result is unverified)", err=True)
    elif d.rebuildable:
        click.echo("the draft should rebuild as is: wtransplant rebuild --spec "
                   f"{output or 'SPEC'}", err=True)


@main.command()
@click.argument("file", required=False, type=click.Path())
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False),
              help="The spec (YAML or JSON) saying what to build and where each weight comes "
                   "from.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to save the model: .keras (default) or .h5. Default: "
                   "<source name>.keras in the current folder.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write the JSON report (plan, checksums, parity, versions) here.")
@click.option("--inputs", multiple=True,
              help="Reference inputs (.npy, data.npz:key, data.h5:dataset); NAME=FILE once "
                   "per input of a model with several; overrides the spec's verify.inputs.")
@click.option("--expected", multiple=True,
              help="Reference outputs for --inputs, once per model output in outputs order.")
@click.option("--input-layout", type=click.Choice(["nchw", "ncl", "ncdhw", "none"]),
              help="Layout of the reference inputs if not channels-last.")
@click.option("--atol", type=TOL, help="Absolute tolerance: pass if |a - b| <= atol + rtol x "
                                       "|b| elementwise (default 1e-5).")
@click.option("--rtol", type=TOL, help="Relative tolerance (default 1e-4).")
@click.option("--force", is_flag=True,
              help="Build a spec that still holds undecided choices (with their first "
                   "candidates) and save the model even if parity fails; the report then "
                   "says verified: false and why.")
@click.option("--show-plan", is_flag=True, help="Print the whole mapping ledger.")
@json_option()
@quiet_option()
@click.option("--no-save", is_flag=True, help="Check only; write no model.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help=f"Give up reading the source's metadata after this long (default "
                   f"{DEFAULT_TIMEOUT}; 0: no limit).")
@handle_errors
def rebuild(file, spec_path, output, report_path, inputs, expected, input_layout, atol, rtol,
            force, show_plan, as_json, quiet, no_save, timeout):
    """Build the Keras model, map every source tensor to a Keras variable, convert layouts,
    assign, check parity and save. Give --spec SPEC, or a FILE that carries its own
    architecture (a Keras 2 full-model H5, a .keras archive)."""
    from pathlib import Path

    from wtransplant.errors import InputError, ParityError
    from wtransplant.planning.spec import VerifySpec, load_spec

    if bool(file) == bool(spec_path):
        raise InputError("give either --spec SPEC or a FILE with its own architecture")
    if spec_path:
        s = load_spec(spec_path)
    else:
        from wtransplant.planning.spec import Spec

        s = Spec(source=Path(file).resolve(), convention="keras")
    if inputs or expected:
        if not (inputs and expected):
            raise InputError("give both --inputs and --expected")
        from wtransplant.checking.verification import named_refs

        v = s.verify or VerifySpec()
        named = named_refs(list(inputs))
        if named is not None:
            v.inputs = {k: _abs_ref(r) for k, r in named.items()}
        elif len(inputs) > 1:
            raise InputError("several --inputs: name each as NAME=FILE (the model's input "
                             "names)")
        else:
            v.inputs = _abs_ref(inputs[0])
        v.expected = _abs_ref(expected[0]) if len(expected) == 1 else \
            [_abs_ref(r) for r in expected]
        s.verify = v
    if s.verify is not None:
        if input_layout:
            s.verify.input_layout = input_layout
        if atol is not None:
            s.verify.atol = atol
        if rtol is not None:
            s.verify.rtol = rtol
    from wtransplant.safety.paths import free_default, spec_inputs

    out = None if no_save else (output or free_default(Path(f"{s.source.stem}.keras"),
                                                       spec_inputs(s)))
    from wtransplant.building.transplanting import check_decided

    # a spec with undecided choices is refused before TensorFlow starts
    check_decided(s, force=force, model_used=s.model is not None)
    from .watchdog import DEFAULT_TIMEOUT, preflight

    # a damaged file that makes the HDF5 library loop or crash is refused before TF starts
    preflight(s.source, DEFAULT_TIMEOUT if timeout is None else timeout)
    choose_backend("rebuild", _rebuild_layer_classes(s, file))
    import_keras(plain_dtypes=_plain_dtypes(s, file))
    from wtransplant.building.transplanting import RebuildReport
    from wtransplant.building.transplanting import rebuild as do_rebuild

    try:
        _model, report = do_rebuild(s, output=out, report_path=report_path, force=force,
                                    progress=False if quiet else None)
    except ParityError as e:
        if isinstance(e.report, RebuildReport):
            _print_rebuild(e.report, as_json, show_plan, quiet)
        raise
    _print_rebuild(report, as_json, show_plan, quiet)


def _plain_dtypes(s, file) -> bool:
    """Whether a rebuild from spec ``s`` is known to use no ml_dtypes type (bfloat16,
    float8, ...): the spec lists the layers itself and names none of them."""
    import json

    from wtransplant.backend import ML_DTYPE_NAMES, spec_layer_classes

    if file or spec_layer_classes(s) is None:
        return False
    try:
        return not ML_DTYPE_NAMES.search(json.dumps(s.to_dict(), default=str))
    except Exception:
        return False


def _rebuild_layer_classes(s, file):
    """The layer classes rebuild will build, read before Keras starts (the spec's layer
    list, or the stored config of a FILE that carries its architecture); None if unknown."""
    from wtransplant.backend import config_layer_classes, spec_layer_classes

    if not file:
        return spec_layer_classes(s)
    from pathlib import Path

    from wtransplant import runtimes

    try:
        cfg = runtimes.get(runtimes.artifact_kind(Path(file))).stored_config(Path(file))
    except WTError:  # rebuild itself says what is wrong with FILE
        return None
    return config_layer_classes(cfg) if cfg is not None else None


def _verify_backend_hints(model, other, kinds):
    """(layer classes, needs_tensorflow) for choosing verify's backend before Keras
    starts: the stored configs of .keras/.h5 models; TensorFlow for SavedModel/LiteRT."""
    from pathlib import Path

    from wtransplant import runtimes
    from wtransplant.backend import config_layer_classes

    tf_kinds = sorted({k for k in kinds if runtimes.get(k).needs_tensorflow})
    if tf_kinds:
        return None, f"a {' and a '.join(tf_kinds)} artifact is loaded with TensorFlow"
    classes: list | None = []
    for p, kind in zip([p for p in (model, other) if p], kinds):
        cfg = runtimes.get(kind).stored_config(Path(p))
        if cfg is None:
            continue
        got = config_layer_classes(cfg)
        if got is None:
            return None, None
        classes.extend(got)
    return classes, None


def _is_hdf5(path: str, signature: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024 + len(signature))
    except OSError:
        return False
    return any(head[o:o + len(signature)] == signature for o in (0, 512, 1024))


def _print_rebuild(report, as_json: bool, show_plan: bool, quiet: bool = False) -> None:
    _print_report(report, as_json, "print_rebuild", quiet=quiet, show_plan=show_plan)


def _print_report(report, as_json: bool, printer: str, quiet: bool = False, **kw) -> None:
    """The report as JSON (``--json``), nothing (``--quiet``), or through
    ``render.<printer>``."""
    if as_json:
        from wtransplant.atomic import dumps

        # finetune's report is a plain dict; the others are report objects
        click.echo(dumps(report if isinstance(report, dict) else report.to_dict()))
        return
    if quiet:
        return
    from . import render

    getattr(render, printer)(report, **kw)


@main.command()
@click.argument("model", type=click.Path())
@click.option("-f", "--format", "fmt", required=True, metavar="FORMAT",
              help="keras (.keras archive), h5 (legacy HDF5), savedmodel (folder), onnx, "
                   "tflite (LiteRT), or all: every format into the folder OUT.")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="The file (or folder, for savedmodel and all) to write.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Reload the written file in its own runtime and compare it with MODEL "
                   "before giving it its final name.")
@click.option("--opset", type=int, help="ONNX opset (default: the highest tf2onnx writes, 18).")
@click.option("--provenance", "provenance", type=click.Path(dir_okay=False), metavar="R.json",
              help="The rebuild or finetune report (JSON) of MODEL: its source weights' "
                   "sha256 and spec go into the exported file's provenance. Default: what "
                   "MODEL carries (MODEL.wtransplant.json, written by rebuild and finetune).")
@report_option("Write the export report (JSON) here.")
@click.option("--save-report", "save_report", type=click.Path(dir_okay=False), hidden=True)
@click.option("--batch-size", type=COUNT, default=16, show_default=True,
              help="Seeded random samples in the first checked batch (and the timed batch).")
@click.option("--second-batch", type=COUNT, default=3, show_default=True,
              help="Size of the second checked batch (a batch size different from the "
                   "first).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs.")
@click.option("--atol", type=TOL,
              help="Absolute tolerance: pass if |exported - keras| <= atol + rtol x |keras| "
                   "elementwise, per output. Default: 1e-5 x the output's largest magnitude.")
@click.option("--rtol", type=TOL, default=1e-5, show_default=True,
              help="Relative tolerance.")
@click.option("--rel-tol", "rel_tol", type=TOL, hidden=True)
@click.option("--repeats", type=COUNT, default=20, show_default=True,
              help="Timed runs per runtime (the median is reported).")
@json_option()
@quiet_option()
@handle_errors
def export(model, fmt, output, verify, opset, provenance, report_path, save_report,
           batch_size, second_batch, seed, atol, rtol, rel_tol, repeats, as_json, quiet):
    """Write MODEL (.keras, Keras full-model .h5, or a spec) as FORMAT, reload the file in
    its own runtime (Keras, tf.saved_model, onnxruntime, LiteRT), check it computes what
    MODEL computes on seeded random inputs at two batch sizes, and report size and latency.
    A file that fails the check is not kept (exit 1)."""
    from wtransplant.errors import InputError, ParityError
    from wtransplant.exporting.export import ExportReport, export_model, plan_outputs

    if save_report:
        _deprecated("--save-report", "--report")
        if report_path and report_path != save_report:
            raise InputError("give --report once (--save-report is its old name)")
        report_path = save_report
    _report_not_an_input(report_path, model, output, provenance)
    if rel_tol is not None:
        _deprecated("--rel-tol", "--atol/--rtol")
        rtol = rel_tol
    plan_outputs(model, fmt, output)  # bad input fails fast, before TensorFlow starts
    import_keras()

    try:
        report = export_model(model, fmt, output, verify=verify, opset=opset,
                              provenance=provenance, batch_size=batch_size,
                              second_batch=second_batch, seed=seed, atol=atol, rtol=rtol,
                              repeats=repeats, report_path=report_path,
                              progress=False if quiet else None)
    except ParityError as e:
        if isinstance(e.report, ExportReport):  # a parity failure with results to show
            _print_export(e.report, as_json, quiet)
        raise
    _print_export(report, as_json, quiet)


def _print_export(report, as_json: bool, quiet: bool = False) -> None:
    _print_report(report, as_json, "print_export", quiet=quiet)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("other", required=False, type=click.Path())
@click.option("--inputs", multiple=True, metavar="X",
              help="Inputs: .npy, data.npz:key or data.h5:dataset; several inputs as "
                   "NAME=FILE, once per model input. Default: seeded random samples of a "
                   "realistic scale.")
@click.option("--expected", multiple=True, metavar="Y",
              help="Expected outputs for --inputs (once per model output, in the model's "
                   "outputs order).")
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False),
              help="The spec MODEL was rebuilt from: compare with the NumPy reference of its "
                   "source, and diagnose layer by layer on failure.")
@click.option("--activations", metavar="A",
              help="Reference activations stored under the layers' names (.npz, or HDF5 "
                   "with datasets named after the layers) for a per-layer diagnosis.")
@click.option("--input-layout", type=click.Choice(["nchw", "ncl", "ncdhw", "none"]),
              help="Layout of the stored inputs if not channels-last.")
@click.option("--output-layout", type=click.Choice(["nchw", "ncl", "ncdhw", "none"]),
              help="Layout of the expected outputs if not channels-last.")
@click.option("--atol", type=TOL, help="Absolute tolerance: pass if |a - b| <= atol + rtol x "
                                       "|b| elementwise (float32 default 1e-5).")
@click.option("--rtol", type=TOL, help="Relative tolerance (float32 default 1e-4).")
@click.option("--samples", type=COUNT, help="Use the first N samples.")
@click.option("--random", "n_random", type=COUNT, default=16,
              show_default=True, help="Random samples when no --inputs are given.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write a PNG: per-layer error (log axis) and expected against actual.")
@report_option()
@json_option()
@quiet_option()
@click.option("--trust-graph", is_flag=True,
              help="Load a SavedModel or LiteRT file even if its graph can read or write "
                   "files, reach the network or run Python (a SavedModel is a program: see "
                   "docs/security.md).")
@handle_errors
def verify(model, other, inputs, expected, spec_path, activations, input_layout,
           output_layout, atol, rtol, samples, n_random, seed, plot, report_path, as_json,
           quiet, trust_graph):
    """Check that MODEL computes what it should: its outputs on --inputs against
    --expected, or against OTHER (another artifact of the same model: .keras, .h5,
    SavedModel folder, .onnx, .tflite) on the same inputs, or against the NumPy reference of
    the source in --spec. Exit 0 within tolerance, 1 outside it, 2 on bad input."""
    from wtransplant.errors import InputError, ParityError
    from wtransplant.runtimes import precheck

    if expected and not inputs:
        raise InputError("--expected needs --inputs (the inputs that produced it)")
    if other and expected:
        raise InputError("give either OTHER or --expected, not both")
    kinds = [precheck(p, trust_graph=trust_graph)  # cheap checks before TensorFlow starts
             for p in (model, other) if p]
    classes, needs_tf = _verify_backend_hints(model, other, kinds)
    choose_backend("verify", classes, needs_tensorflow=needs_tf)
    import_keras()
    from wtransplant.checking.verification import VerifyReport
    from wtransplant.checking.verification import verify as do_verify

    try:
        report = do_verify(model, other=other, inputs=list(inputs) or None,
                           expected=list(expected) or None, spec=spec_path,
                           activations=activations, input_layout=input_layout,
                           output_layout=output_layout, atol=atol, rtol=rtol, samples=samples,
                           seed=seed, n_random=n_random, plot=plot, report_path=report_path,
                           trust_graph=trust_graph)
    except ParityError as e:
        if isinstance(e.report, VerifyReport):
            _print_report(e.report, as_json, "print_verify", quiet=quiet)
        raise
    _print_report(report, as_json, "print_verify", quiet=quiet)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--data", "data", required=True, type=click.Path(),
              help="Training data: HDF5 (named datasets, streamed), .npz, CSV, or an image "
                   "folder with one subfolder per class.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to save the fine-tuned model (.keras or .h5). Written only when "
                   "the run ends well; history, curves and report go to OUT's run folder "
                   "(<OUT stem>.finetune/).")
@click.option("--x", "x", metavar="NAME", help="Training inputs: dataset/array name (CSV: "
              "comma-separated feature columns). Default: found by name (train_set_x, x...).")
@click.option("--y", "y", metavar="NAME", help="Training targets (CSV: the target column). "
              "Default: the array paired with --x by name.")
@click.option("--val-data", type=click.Path(), help="Validation data in another file/folder.")
@click.option("--val-x", metavar="NAME", help="Validation inputs in --val-data.")
@click.option("--val-y", metavar="NAME", help="Validation targets in --val-data.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              metavar="F",
              help="Keep the last fraction F of the training data for validation. Default "
                   "validation: the matching val_/test_ pair in the same file.")
@click.option("--epochs", type=COUNT, default=5, show_default=True)
@click.option("--batch-size", type=COUNT, default=32, show_default=True,
              help="Global batch size (split across replicas by --strategy).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]),
              default="adam", show_default=True)
@click.option("--schedule", type=click.Choice(["constant", "cosine", "exponential"]),
              default="constant", show_default=True, help="Learning-rate schedule per phase.")
@click.option("--decay-rate", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="--schedule exponential: factor per epoch.")
@click.option("--trainable-from", metavar="LAYER",
              help="Name or index (negative from the end) of the first trainable layer; "
                   "every layer before it stays frozen.")
@click.option("--trainable", metavar="REGEX",
              help="Also train the layers whose name matches REGEX.")
@click.option("--new-head", type=COUNT, metavar="N",
              help="Replace the last layer by a new N-unit head (softmax for classes, "
                   "linear for regression).")
@click.option("--head-activation", metavar="NAME", help="Activation of the new head.")
@click.option("--head-epochs", type=click.IntRange(min=0), metavar="N",
              help="Epochs that train the new head alone before unfreezing (default: half "
                   "of --epochs when layers are unfrozen).")
@click.option("--lr-scale", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Learning rate factor after unfreezing (second phase).")
@click.option("--train-bn", is_flag=True,
              help="Let unfrozen BatchNormalization layers train (default: frozen, in "
                   "inference mode).")
@click.option("--task", type=click.Choice(["auto", "classification", "binary", "regression"]),
              default="auto", show_default=True)
@click.option("--loss", help="Keras loss name (default: from the task).")
@click.option("--metrics", help="Comma-separated Keras metric names (default: from the task).")
@click.option("--rescale", type=click.FloatRange(min=0, min_open=True), help="Multiply inputs by F (default 1/255 for image "
                                            "folders).")
@click.option("--standardize", is_flag=True,
              help="Subtract the per-channel mean and divide by the std of the training data.")
@click.option("--flip", type=click.Choice(["horizontal", "vertical", "both"]),
              help="Random flips of training images.")
@click.option("--rotation", type=click.FloatRange(0, 180), default=0.0, metavar="DEG",
              help="Random rotations of training images within +-DEG degrees.")
@click.option("--precision", type=click.Choice(["auto", "float32", "mixed", "mixed_bfloat16"]),
              default="auto", show_default=True,
              help="auto: mixed float16 on a GPU with compute capability >= 7.0, else float32.")
@click.option("--jit/--no-jit", default=None, help="XLA compilation (default: Keras' auto).")
@click.option("--steps-per-execution", type=COUNT, default=1, show_default=True)
@click.option("--strategy", type=click.Choice(["none", "mirrored", "multiworker"]),
              default="none", show_default=True,
              help="tf.distribute strategy (TensorFlow backend): several GPUs, or several "
                   "machines from TF_CONFIG.")
@click.option("--cpu-devices", type=COUNT, metavar="N",
              help="Split the CPU into N logical devices (to run --strategy mirrored without "
                   "GPUs; for testing, not speed).")
@click.option("--workers", type=click.IntRange(min=0),
              help="Feed Keras through a keras.utils.PyDataset with N loader threads (default: "
                   "a chunked tf.data pipeline under TensorFlow, 2 threads otherwise).")
@click.option("--multiprocessing", is_flag=True,
              help="With --workers N: load batches in N processes instead of threads (each "
                   "opens the data file itself).")
@click.option("--patience", type=click.IntRange(min=0), default=0, show_default=True,
              help="Early stopping: epochs without a better validation loss (0: off).")
@click.option("--restore-best", is_flag=True, help="End with the weights of the best epoch.")
@click.option("--seed", type=int, help="Seed everything; on TensorFlow CPU runs repeat "
                                       "bit for bit.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run from its last checkpoint (same options).")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Folder for checkpoints, history, curves, report (default: "
                   "<OUT stem>.finetune/ next to OUT).")
@click.option("--keep-checkpoints", is_flag=True, help="Keep the checkpoints after success.")
@click.option("--tensorboard", type=click.Path(file_okay=False), metavar="DIR",
              help="Write a TensorBoard log (needs the tensorboard package).")
@click.option("--skip-nonfinite", is_flag=True,
              help="Leave out samples whose inputs or targets hold NaN/Inf (counted in the "
                   "report); without it such a sample is an input error (exit 2).")
@click.option("--no-plot", is_flag=True, help="Do not draw the learning curves PNG.")
@click.option("--provenance", type=click.Path(dir_okay=False), metavar="R.json",
              help="The rebuild (or finetune) report of MODEL, recorded as the origin of its "
                   "weights. Default: what MODEL carries (MODEL.wtransplant.json).")
@report_option("Also write the JSON report here (it is always written to the run folder).")
@quiet_option()
@json_option()
@handle_errors
def finetune(model, data, output, cpu_devices, metrics, no_plot, provenance, report_path,
             quiet, as_json, **kw):
    """Fine-tune MODEL (.keras, or a Keras 2 full-model .h5) on new data: optionally a new
    head, frozen layers, two phases (head first, then unfrozen at a lower learning rate),
    checkpoints every epoch, a final evaluation; writes OUT, history.csv/json and a PNG of
    the learning curves. Exit 0; 1 if training diverged (NaN loss; OUT not written); 2 on
    bad input."""
    from wtransplant.reading.h5io import HDF5_SIGNATURE

    from .watchdog import preflight

    _report_not_an_input(report_path, model, data, output, provenance, kw.get("val_data"))

    for p in (model, data, kw.get("val_data")):
        # HDF5 model/data files are walked in a child first: a damaged file that makes the
        # HDF5 library loop or crash is refused before TensorFlow starts
        if p and os.path.isfile(p) and _is_hdf5(p, HDF5_SIGNATURE):
            preflight(p)
    if cpu_devices or kw.get("strategy") == "multiworker":
        from wtransplant.finetuning.tfextras import get_strategy, split_cpu
        from wtransplant.quiet_tf import quiet_stderr

        with quiet_stderr(replay=True):  # TensorFlow's start-up chatter
            if cpu_devices:  # before TensorFlow starts its devices
                split_cpu(cpu_devices)
            if kw.get("strategy") == "multiworker":  # before TensorFlow runs any operation
                get_strategy("multiworker")
    import_keras()
    from wtransplant.finetuning.train import finetune as do_finetune

    kw["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    _model, hist = do_finetune(model, data, output=output, plot=not no_plot,
                               progress=False if quiet else None,
                               provenance=provenance, **kw)
    report = hist.report
    if report_path:
        from wtransplant.atomic import write_json

        write_json(report_path, report)
    _print_report(report, as_json, "print_finetune", quiet=quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
