"""Outputs never overwrite inputs.

``spec W.h5 -o W.h5`` would replace the weights with YAML; ``rebuild b.keras`` with the
default output name would replace its own input. Two guards:

- :func:`check_output` compares an output path with the inputs a library function knows it
  reads (after resolving symlinks, and by device+inode, so hard links and ``./x`` count);
  for an output directory (a SavedModel), an input inside it counts too. ``rebuild``,
  ``export``, ``finetune`` call it before any work.
- :func:`note_input` records every file the library opens (``check_readable_file``, specs,
  reference arrays); once :func:`guard_all_outputs` has been called (the command line does
  it for every command), ``atomic_path`` refuses to write over any of them. Library users
  get the first guard only, so that one process may rewrite a file it read earlier.
"""

from __future__ import annotations

import os
from pathlib import Path

from wtransplant.errors import InputError

_inputs: dict[str, tuple[int, int] | None] = {}
_guard = False


def _identity(p: Path) -> tuple[str, tuple[int, int] | None]:
    try:
        real = os.path.realpath(p)
    except (OSError, ValueError):
        real = os.path.abspath(p)
    try:
        st = os.stat(real)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def note_input(path) -> None:
    """Record ``path`` as an input of this process (cheap; never raises)."""
    if path is None:
        return
    try:
        real, ident = _identity(Path(path))
    except Exception:  # noqa: BLE001 - a guard must not break reading
        return
    _inputs[real] = ident


def guard_all_outputs(on: bool = True) -> None:
    """From now on every output written through ``atomic_path`` is checked against every
    input recorded by :func:`note_input`."""
    global _guard
    _guard = on
    _inputs.clear()


def collides(output, inputs, *, directory: bool | None = None) -> str | None:
    """The input ``output`` would overwrite (or contain, if it is or will be a directory:
    ``directory`` None means "if it is one now"), else None."""
    out_real, out_ident = _identity(Path(output))
    for inp in inputs:
        if inp is None:
            continue
        in_real, in_ident = _identity(Path(inp))
        if in_real == out_real or (out_ident is not None and in_ident == out_ident):
            return str(inp)
        is_dir = os.path.isdir(out_real) if directory is None else directory
        if is_dir and in_real.startswith(out_real.rstrip(os.sep) + os.sep):
            return str(inp)  # the output directory holds the input
    return None


def check_output(output, inputs, *, what: str = "output", directory: bool | None = None
                 ) -> None:
    """Raise InputError (exit 2) if ``output`` is one of ``inputs`` (or holds one)."""
    if output is None:
        return
    hit = collides(output, inputs, directory=directory)
    if hit is not None:
        raise InputError(f"{what} {str(output)!r} would overwrite the input {hit!r}: "
                         f"choose another output path", path=None)


def check_registered(output, directory: bool | None = None) -> None:
    """``atomic_path``'s hook: refuse an output that is an input read by this command."""
    if _guard and _inputs:
        check_output(output, list(_inputs), directory=directory or None)


def free_default(path: Path, inputs) -> Path:
    """``path`` if it collides with no input, else ``stem.rebuilt.suffix`` (then
    ``stem.rebuilt-2.suffix``...): a default output name never replaces an input."""
    path = Path(path)
    if collides(path, inputs) is None:
        return path
    for i in range(1, 100):
        tag = "rebuilt" if i == 1 else f"rebuilt-{i}"
        cand = path.with_name(f"{path.stem}.{tag}{path.suffix}")
        if collides(cand, inputs) is None:
            return cand
    raise InputError(f"no free default output name next to {path}: give -o")


def spec_inputs(spec) -> list:
    """Every file a spec makes rebuild read: the spec, its source, its model JSON and its
    reference arrays (``file.npy`` or ``file.h5:key``)."""
    out = [getattr(spec, "path", None), getattr(spec, "source", None)]
    model = getattr(spec, "model", None)
    if model is not None:
        out.append(getattr(model, "keras_config", None))
    v = getattr(spec, "verify", None)
    base = getattr(spec, "base_dir", None)
    for ref in (getattr(v, "inputs", None), getattr(v, "expected", None)) if v else ():
        for r in ref if isinstance(ref, list | tuple) else (ref.values() if isinstance(
                ref, dict) else [ref]):
            if isinstance(r, str) and r:
                name = r.split(":", 1)[0] if ":" in r and not os.path.exists(r) else r
                p = Path(name)
                out.append(p if p.is_absolute() or base is None else Path(base) / p)
    return [p for p in out if p is not None]


def check_targets(targets, model) -> None:
    """``export``: no (format, path) target may be the model file or its sources."""
    if not isinstance(model, str | os.PathLike):
        return
    inputs = [model]
    if Path(model).suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            from wtransplant.planning.spec import load_spec

            inputs += spec_inputs(load_spec(model))
        except Exception:  # noqa: BLE001 - a bad spec is reported by the loader later
            pass
    for fmt, path in targets:
        check_output(path, inputs, directory=fmt == "savedmodel")
