"""What every runtime shares: the loaded-model interface (:class:`Artifact`), the
description of one format (:class:`Format`), seeded random inputs, and where provenance
lives next to an exported file.

Layer 1: NumPy only. A runtime module subclasses :class:`Format` once per format it reads
and writes, and :class:`Artifact` for the loaded model; the registry
(:mod:`wtransplant.runtimes`) finds them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError

#: length used for dimensions other than the batch that the model leaves open
DEFAULT_OPEN_DIM = 8
#: integer inputs with no Embedding (or similar) to say their range get values in [0, this)
DEFAULT_INT_HIGH = 10
#: provenance of an exported file ``OUT``: ``OUT.wtransplant.json`` next to it...
SIDECAR_SUFFIX = ".wtransplant.json"
#: ...or ``OUT/wtransplant.json`` inside a folder (SavedModel)
SAVEDMODEL_SIDECAR = "wtransplant.json"
#: sniff results: the first bytes say so; only the name says so
BY_CONTENT, BY_NAME = 2, 1

_TF_NAME = re.compile(r"[^A-Za-z0-9_.\-/]")


@dataclass
class TensorInfo:
    """One input or output: its name, shape (``None`` for the batch and any open
    dimension) and dtype name. ``high``: exclusive upper bound of valid values for an
    integer input (an Embedding's ``input_dim``), when known."""

    name: str
    shape: tuple
    dtype: str
    high: int | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.high is not None:
            d["high"] = self.high
        return d

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"{self.name} ({dims}) {self.dtype}"


def readable_name(name: str, taken: set[str] | None = None) -> str:
    """A tensor name every runtime accepts (TF's signature names are the strictest), made
    unique within ``taken`` (which is updated)."""
    s = _TF_NAME.sub("_", str(name)).strip("/") or "tensor"
    if not s[0].isalnum() and s[0] != ".":
        s = "t" + s
    if taken is not None:
        base, i = s, 1
        while s in taken:
            s = f"{base}_{i}"
            i += 1
        taken.add(s)
    return s


def dims(shape) -> tuple:
    """A shape as a tuple of ints, ``None`` for open dimensions."""
    return tuple(None if d is None else int(d) for d in shape)


def shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


class Artifact:
    """A loaded model: ``kind`` is the format it was read as (``keras``, ``h5``, ``spec``,
    ``model`` for an in-memory Keras model, ``savedmodel``, ``onnx``, ``tflite``),
    ``runtime`` what runs it."""

    kind: str = "?"
    runtime: str = "?"

    def __init__(self, path: Path | None, inputs: list[TensorInfo], outputs: list[TensorInfo]):
        self.path = path
        self.inputs = inputs
        self.outputs = outputs
        self.notes: list[str] = []
        self.metadata: dict = {}
        self.provenance: dict | None = None

    keras_model = None

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def display(self) -> str:
        return str(self.path) if self.path is not None else f"<{self.kind} model>"

    def describe(self) -> dict:
        return {"path": str(self.path) if self.path else None, "kind": self.kind,
                "runtime": self.runtime,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    # -- running ------------------------------------------------------------------------

    def predict(self, x, batch_size: int | None = None) -> list[np.ndarray]:
        """Run the model on ``x``: one array, a list of arrays in ``inputs`` order, or a
        dict by input name. Returns one array per output, in ``outputs`` order."""
        xs = self.check_inputs(x)
        n = len(xs[0])
        if batch_size is None or batch_size >= n:
            return self._run(xs)
        parts = [self._run([a[i:i + batch_size] for a in xs]) for i in range(0, n, batch_size)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]

    def _run(self, xs: list[np.ndarray]) -> list[np.ndarray]:  # one batch
        raise NotImplementedError

    def runner(self, xs: list[np.ndarray]):
        """A no-argument callable running one batch the fastest way the runtime offers
        (for timing); ``xs`` as returned by :meth:`check_inputs`."""
        return lambda: self._run(xs)

    def check_inputs(self, x) -> list[np.ndarray]:
        """Arrays in ``inputs`` order, cast to each input's dtype; one-line InputError for
        a wrong count, name, rank or fixed dimension."""
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise InputError(f"{self.display}: no array given for input(s) "
                                 f"{', '.join(missing)} (given: {', '.join(map(str, x))})")
            xs = [x[n] for n in self.input_names]
        elif isinstance(x, list | tuple):
            xs = list(x)
        else:
            xs = [x]
        if len(xs) != len(self.inputs):
            raise InputError(f"{self.display}: the model has {len(self.inputs)} input(s) "
                             f"({', '.join(self.input_names)}) but {len(xs)} array(s) were "
                             f"given")
        out = []
        n0 = None
        for a, t in zip(xs, self.inputs):
            a = np.asarray(a)
            if a.ndim != len(t.shape) or any(d is not None and d != g
                                             for d, g in zip(t.shape[1:], a.shape[1:])):
                raise InputError(f"{self.display}: input {t.name} takes shape "
                                 f"{shape_text(t.shape)}, got {a.shape}")
            if n0 is None:
                n0 = a.shape[0]
            elif a.shape[0] != n0:
                raise InputError(f"{self.display}: inputs have different batch sizes "
                                 f"({n0} and {a.shape[0]} for {t.name})")
            out.append(np.ascontiguousarray(a.astype(t.dtype, copy=False)))
        return out

    def close(self) -> None:
        pass


class Unsupported(InputError):
    """A format cannot express this model (e.g. ops with no LiteRT built-in): exit 2 for
    that format alone; ``export --format all`` skips the format and says why."""


class Format:
    """One format a runtime reads and (if ``all_name`` is set) writes. Subclasses set the
    attributes and override what differs; every heavy import happens inside a method."""

    #: the artifact kind and the value of ``export --format``
    name: str = "?"
    #: what runs it, as reports say
    runtime: str = "?"
    #: how messages name it ("a SavedModel", "an ONNX model")
    text: str = "?"
    #: file names it is written under (empty for a folder)
    suffixes: tuple[str, ...] = ()
    #: written as a folder
    folder: bool = False
    #: name inside the folder of ``export --format all``; None: not written by export
    all_name: str | None = None
    #: where an exported file's provenance goes: ``sidecar`` (OUT.wtransplant.json next to
    #: it), ``inside`` (OUT/wtransplant.json in the folder), ``metadata`` (the writer puts
    #: it in the file)
    provenance: str = "sidecar"
    #: a Keras model that export can start from
    keras_source: bool = False
    #: loading it starts TensorFlow (verify then runs Keras on TensorFlow too)
    needs_tensorflow: bool = False
    #: TensorFlow traces the model to write it: under another Keras backend it is written
    #: by TensorFlow in a child process, except under ``native_backends``, whose Keras
    #: converts the model itself (jax2tf)
    traced_by_tensorflow: bool = False
    native_backends: tuple[str, ...] = ()
    #: export options it takes (``opset``)
    options: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<format {self.name} ({self.runtime})>"

    # -- reading ------------------------------------------------------------------------

    def sniff(self, path: Path, head: bytes) -> int:
        """BY_CONTENT if ``head`` (the first 1024 bytes; empty for a folder) says the file
        is this format, BY_NAME if only its name does, 0 if neither; may raise InputError
        for a file that is this format under a name its runtime would misread."""
        return 0

    def precheck(self, path: Path, *, trust_graph: bool = False) -> None:
        """Checks that need no runtime (archive paths, links out of a file, ops of a graph),
        so that a command refuses bad input before TensorFlow starts."""

    def stored_config(self, path: Path) -> dict | None:
        """The Keras model config stored in the file, read without Keras (None: none)."""
        return None

    def load(self, path: Path, *, trust_graph: bool = False) -> Artifact:
        raise InputError(f"{self.text} cannot be loaded", path=str(path))

    def reload(self, path: Path) -> Artifact:
        """Load a file export just wrote, in this format's own runtime, no fallbacks."""
        return self.load(path)

    def load_failure_detail(self, path: Path, message: str, src) -> str:
        """Extra words for a written file that does not load (e.g. the layer behind an
        operator the runtime refused); '' if none."""
        return ""

    # -- writing ------------------------------------------------------------------------

    def check_output_name(self, out: Path) -> None:
        """Refuse an output name this format cannot be written under."""
        if out.suffix.lower() not in self.suffixes:
            raise InputError(f"the {self.name} format needs a file name ending in "
                             f"{' or '.join(self.suffixes)}", path=str(out))
        if out.is_dir():
            raise InputError("is a directory; give a file name", path=str(out))

    def check_options(self, opts: dict) -> None:
        """Check and settle (in place) the export options this format takes."""

    def write(self, src, tmp: Path, prov: dict, **options) -> dict:
        """Write the Keras model ``src`` (a KerasArtifact) to ``tmp`` (a folder already
        made when ``folder``), with ``prov`` if the provenance goes inside. Returns
        ``{"opset": ..., "notes": [...]}`` (both optional)."""
        raise InputError(f"wtransplant does not write {self.text}")

    def place_provenance(self, tmp: Path, out: Path, data: dict, *, renamed: bool) -> str | None:
        """Write ``data`` (the provenance JSON) where this format keeps it: called before
        ``tmp`` is renamed to ``out`` (``renamed`` false) and after. Returns where it went,
        for the report, once it is placed."""
        if self.provenance == "inside" and not renamed:
            from wtransplant.atomic import write_json

            write_json(tmp / SAVEDMODEL_SIDECAR, data)
            return str(out / SAVEDMODEL_SIDECAR)
        if self.provenance == "sidecar" and renamed:
            from wtransplant.atomic import write_json

            side = sidecar_path(out)
            write_json(side, data)
            return str(side)
        if self.provenance == "metadata" and renamed:
            return f"{out} (metadata_props)"
        return None


# --------------------------------------------------------------------------------------
# provenance next to a file


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the provenance JSON of an exported file lives: ``OUT.wtransplant.json`` next
    to a file, ``OUT/wtransplant.json`` inside a SavedModel directory."""
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        return p / SAVEDMODEL_SIDECAR
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike) -> dict | None:
    side = sidecar_path(path)
    try:
        if side.stat().st_size > 16 << 20:
            return None
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sidecar_order(side: Path, key: str, default: list[str]) -> list[str]:
    """The input/output order a wtransplant export recorded, when it names the same
    tensors as the runtime does; else ``default``."""
    try:
        if side.stat().st_size > 16 << 20:
            return default
        data = json.loads(side.read_text(encoding="utf-8"))
        names = [t["name"] for t in data[key]]
    except (OSError, ValueError, KeyError, TypeError):
        return default
    return names if sorted(names) == sorted(default) else default


# --------------------------------------------------------------------------------------
# inputs


def random_inputs(obj, n: int, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs for an Artifact or a Keras model: standard normal for floats,
    integers in each input's valid range (an Embedding's ``input_dim``), random booleans;
    never all zeros or ones. Open dimensions other than the batch get
    ``DEFAULT_OPEN_DIM``.

    Args:
        obj: an :class:`Artifact` or a ``keras.Model``.
        n: samples per input (at least 1).
        seed: the random generator's seed.

    Returns:
        One array per model input, each of shape ``(n, ...)`` and the input's dtype.

    Raises:
        InputError: ``n`` is less than 1, or an input's shape or dtype cannot be sampled.
    """
    if not isinstance(obj, Artifact):
        from wtransplant.runtimes.keras import from_model

        obj = from_model(obj)
    if n < 1:
        raise InputError(f"number of samples must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for t in obj.inputs:
        shape = (n,) + tuple(DEFAULT_OPEN_DIM if d is None else d for d in t.shape[1:])
        dt = np.dtype(t.dtype)
        if dt.kind == "f":
            a = rng.standard_normal(shape).astype(dt)
        elif dt.kind in "iu":
            high = t.high if t.high is not None else DEFAULT_INT_HIGH
            a = rng.integers(0, max(high, 2), size=shape).astype(dt)
        elif dt.kind == "b":
            a = rng.random(shape) < 0.5
        else:
            raise InputError(f"input {t.name}: cannot generate random values of dtype "
                             f"{t.dtype}")
        out.append(a)
    return out
