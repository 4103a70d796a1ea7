"""Runtimes: every format wtransplant loads (``verify``) and writes (``export``), one
module each, behind one registry.

    art = load_artifact("net.onnx")          # .keras, .h5, SavedModel dir, .onnx, .tflite, spec
    art.kind, art.inputs, art.outputs        # names, shapes (batch None), dtypes
    xs = random_inputs(art, 16, seed=0)      # seeded, realistic scale, one array per input
    ys = art.predict(xs)                     # list of arrays, in art.outputs order
    get("onnx").write(src, tmp, prov)        # a KerasArtifact written as ONNX

A runtime module (:mod:`.keras`, :mod:`.savedmodel`, :mod:`.onnx`, :mod:`.litert`) defines
one :class:`~wtransplant.runtimes.base.Format` per format it handles (suffixes, sniffing,
prechecks, load, write, provenance placement, how messages name it) in its ``FORMATS``.
Adding a format is one such module and one line in :data:`MODULES`.

Importing this package imports neither Keras nor TensorFlow: the runtime modules are
imported on first use, and import Keras, TensorFlow, tf2onnx or onnxruntime only inside the
functions that use them.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from wtransplant.errors import InputError
from wtransplant.runtimes.base import (
    BY_CONTENT,
    DEFAULT_INT_HIGH,
    DEFAULT_OPEN_DIM,
    SAVEDMODEL_SIDECAR,
    SIDECAR_SUFFIX,
    Artifact,
    Format,
    TensorInfo,
    Unsupported,
    random_inputs,
    read_sidecar,
    readable_name,
    sidecar_path,
)

#: the runtime modules, in the order their formats are listed, sniffed and exported by
#: ``--format all``
MODULES = (
    "wtransplant.runtimes.keras",
    "wtransplant.runtimes.savedmodel",
    "wtransplant.runtimes.onnx",
    "wtransplant.runtimes.litert",
)

_FORMATS: tuple[Format, ...] | None = None


def formats() -> tuple[Format, ...]:
    """Every registered format, in registry order."""
    global _FORMATS
    if _FORMATS is None:
        _FORMATS = tuple(f for m in MODULES for f in importlib.import_module(m).FORMATS)
    return _FORMATS


def export_formats() -> tuple[str, ...]:
    """The names ``export --format`` takes (``all`` aside), in the order ``all`` writes."""
    return tuple(f.name for f in formats() if f.all_name)


def get(name: str) -> Format:
    """The format called ``name``; InputError if there is none."""
    for f in formats():
        if f.name == name:
            return f
    raise InputError(f"unknown artifact kind {name!r}")


def artifact_kind(path: str | os.PathLike) -> str:
    """What ``path`` is, from its name and first bytes (no model code is run): the first
    format whose content matches, else the first whose name does."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", path=str(p))
    if p.is_dir():
        from wtransplant.safety.paths import note_input

        note_input(p)
        for f in formats():
            if f.folder and f.sniff(p, b""):
                return f.name
        raise InputError("a directory but not a SavedModel (no saved_model.pb inside)",
                         path=str(p))
    from wtransplant.reading.h5io import check_readable_file

    check_readable_file(p)
    with open(p, "rb") as fh:
        head = fh.read(1024)
    by_name = None
    for f in formats():
        if f.folder:
            continue
        got = f.sniff(p, head)
        if got == BY_CONTENT:
            return f.name
        if got and by_name is None:
            by_name = f.name
    if by_name is not None:
        return by_name
    raise InputError("not a model wtransplant can load: expected a .keras archive, a Keras "
                     "full-model .h5, a SavedModel directory, an .onnx or .tflite file, or a "
                     "spec", path=str(p))


def precheck(path: str | os.PathLike, *, trust_graph: bool = False) -> str:
    """``artifact_kind`` plus the checks that need no runtime (archive paths, links out of
    an HDF5 file, a model config present, a SavedModel's ops): lets a command refuse bad
    input at once."""
    p = Path(path)
    kind = artifact_kind(p)
    get(kind).precheck(p, trust_graph=trust_graph)
    return kind


def load_artifact(path: str | os.PathLike, *, kind: str | None = None,
                  trust_graph: bool = False) -> Artifact:
    """Load ``path`` in its own runtime.

    Args:
        path: a ``.keras`` archive, a Keras full-model ``.h5``, a SavedModel folder, an
            ``.onnx`` or ``.tflite`` file, or a spec (rebuilt in memory).
        kind: ``keras``, ``h5``, ``savedmodel``, ``onnx``, ``tflite`` or ``spec``;
            default: detected from the path.
        trust_graph: load a SavedModel or LiteRT file even if its graph uses ops that
            read or write files, reach the network or run Python (refused by default).

    Returns:
        An :class:`Artifact` with ``predict(inputs)``, ``describe()`` and its provenance.

    Raises:
        InputError: missing or unreadable file, an unknown kind, a model config with code
            in it, a graph with file/network/process ops, or a runtime that cannot load
            it (exit 2).
    """
    p = Path(path)
    kind = kind or artifact_kind(p)
    try:
        fmt = get(kind)
    except InputError:
        raise InputError(f"unknown artifact kind {kind!r}", path=str(p)) from None
    art = fmt.load(p, trust_graph=trust_graph)
    if art.provenance is None:
        art.provenance = read_sidecar(p)
    return art


def from_model(model):
    """Wrap an in-memory Keras model (a KerasArtifact)."""
    from wtransplant.runtimes.keras import from_model as wrap

    return wrap(model)


__all__ = ["Artifact", "Format", "TensorInfo", "Unsupported", "MODULES", "formats",
           "export_formats", "get", "artifact_kind", "precheck", "load_artifact",
           "from_model", "random_inputs", "readable_name", "sidecar_path", "read_sidecar",
           "SIDECAR_SUFFIX", "SAVEDMODEL_SIDECAR", "DEFAULT_OPEN_DIM", "DEFAULT_INT_HIGH"]
