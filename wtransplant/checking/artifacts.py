"""Loading any model wtransplant can run, behind one interface.

    art = load_artifact("net.onnx")          # .keras, .h5, SavedModel dir, .onnx, .tflite, spec
    art.kind, art.inputs, art.outputs        # names, shapes (batch None), dtypes
    xs = random_inputs(art, 16, seed=0)      # seeded, realistic scale, one array per input
    ys = art.predict(xs)                     # list of arrays, in art.outputs order

Used by ``wtransplant export`` (reload each written file in its own runtime) and by
``wtransplant verify MODEL OTHER`` (compare two artifacts on the same inputs).

Layers: the Keras part (``.keras``, ``.h5``, specs, in-memory models) uses the public
``keras`` API only; SavedModel, ONNX and LiteRT import TensorFlow / onnxruntime lazily, in
the functions that need them. Importing this module imports neither.

Safety: ``.keras`` archives are checked for member paths that escape the archive and for
configs that are code (Lambda, custom classes) before Keras opens them, and are loaded with
``safe_mode=True``; HDF5 files are refused if they point at data in other files.
Every problem with an input is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wtransplant.errors import InputError, UnsafeInputError
from wtransplant.quiet_tf import install as _quiet_tf

_quiet_tf()  # Keras may import TensorFlow lazily under any backend: keep its logs off stderr

#: length used for dimensions other than the batch that the model leaves open
DEFAULT_OPEN_DIM = 8
#: integer inputs with no Embedding (or similar) to say their range get values in [0, this)
DEFAULT_INT_HIGH = 10
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SIDECAR_SUFFIX = ".wtransplant.json"
SAVEDMODEL_SIDECAR = "wtransplant.json"

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


class Artifact:
    """A loaded model: ``kind`` is one of ``keras``, ``h5``, ``spec``, ``model`` (an
    in-memory Keras model), ``savedmodel``, ``onnx``, ``tflite``."""

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
                                 f"{_shape_text(t.shape)}, got {a.shape}")
            if n0 is None:
                n0 = a.shape[0]
            elif a.shape[0] != n0:
                raise InputError(f"{self.display}: inputs have different batch sizes "
                                 f"({n0} and {a.shape[0]} for {t.name})")
            out.append(np.ascontiguousarray(a.astype(t.dtype, copy=False)))
        return out

    def close(self) -> None:
        pass


def _shape_text(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


# --------------------------------------------------------------------------------------
# Keras (layer 2: public keras API only)


class KerasArtifact(Artifact):
    """A Keras 3 model: from ``.keras``, ``.h5``, a spec, or given in memory."""

    runtime = "keras"

    def __init__(self, model, path: Path | None = None, kind: str = "model"):
        self.kind = kind
        self.keras_model = model
        ins, outs = keras_signature(model)
        super().__init__(path, ins, outs)
        self._dict_in = _input_structure(model)
        try:  # a functional model built with inputs=[x] expects a list even of one
            self._list_in = isinstance(model.input, (list, tuple))
        except (AttributeError, ValueError):
            self._list_in = False

    def call_arg(self, xs: list):
        """What the Keras model takes: a dict, a list, or one tensor (the structure it was
        built with, so that Keras does not warn about a mismatch)."""
        if self._dict_in:
            return dict(zip(self._dict_in, xs))
        return list(xs) if len(xs) > 1 or self._list_in else xs[0]

    def runner(self, xs):
        arg = self.call_arg(xs)  # a compiled predict step, not an eager call
        return lambda: self.keras_model.predict_on_batch(arg)

    def _run(self, xs):
        y = self.keras_model(self.call_arg(xs), training=False)
        return [np.asarray(_to_numpy(t)) for t in flatten_outputs(y)]


def _to_numpy(t):
    import keras

    return keras.ops.convert_to_numpy(t)


def _input_structure(model) -> list[str] | None:
    """The keys, when the model takes a dict of inputs."""
    try:
        struct = model.input
    except (AttributeError, ValueError):
        return None
    return list(struct) if isinstance(struct, dict) else None


def flatten_outputs(y) -> list:
    """A model's outputs as a flat list: a dict in its own key order, a list as is."""
    if isinstance(y, dict):
        return list(y.values())
    if isinstance(y, list | tuple):
        return list(y)
    return [y]


def keras_signature(model) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a Keras model, with readable, unique names."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise InputError(f"model {model.name!r} has no known inputs (a subclassed model that "
                         f"was never built); wtransplant works with functional and Sequential "
                         f"models")
    keys = _input_structure(model)
    taken: set[str] = set()
    ins = []
    highs = _int_input_ranges(model)
    for i, t in enumerate(inputs):
        raw = keys[i] if keys else t.name
        dt = str(t.dtype) if t.dtype is not None else "float32"
        high = highs.get(t.name) if np.dtype(dt).kind in "iu" else None
        if high is None and np.dtype(dt).kind in "iu":
            high = highs.get("*")
        ins.append(TensorInfo(readable_name(raw, taken), _dims(t.shape), dt, high))
    outs_t = list(model.outputs)
    names = _output_names(model, len(outs_t))
    outs = [TensorInfo(readable_name(n, taken), _dims(t.shape),
                       str(t.dtype) if t.dtype is not None else "float32")
            for n, t in zip(names, outs_t)]
    return ins, outs


def _dims(shape) -> tuple:
    return tuple(None if d is None else int(d) for d in shape)


def _output_names(model, n: int) -> list[str]:
    try:
        struct = model.output
    except (AttributeError, ValueError):
        struct = None
    if isinstance(struct, dict):
        return list(struct)
    names = getattr(model, "output_names", None)
    if names and len(names) == n:
        return list(names)
    if n == 1 and model.layers:
        return [model.layers[-1].name]
    return [f"output_{i}" for i in range(n)]


def _int_input_ranges(model) -> dict:
    """input tensor name -> exclusive upper bound of valid values, read from the Embedding
    (or CategoryEncoding) layers that take that input directly; key '*' is the smallest bound
    over all such layers in the model (used for integer inputs not directly connected)."""
    out: dict = {}
    bounds = []
    for lay in _all_layers(model):
        cfg_name = type(lay).__name__
        high = None
        if cfg_name == "Embedding":
            high = int(lay.input_dim)
        elif cfg_name == "CategoryEncoding":
            high = int(lay.num_tokens)
        if high is None:
            continue
        bounds.append(high)
        try:
            name = lay.input.name
        except (AttributeError, ValueError):
            continue
        out[name] = min(high, out.get(name, high))
    if bounds:
        out["*"] = min(bounds)
    return out


def _all_layers(model) -> list:
    out = []
    for lay in getattr(model, "layers", []):
        out.append(lay)
        if hasattr(lay, "layers") and lay is not model:
            out.extend(_all_layers(lay))
    return out


def keras_archive_config(path: Path) -> dict:
    """The config of a ``.keras`` archive, after refusing member paths that escape it
    (zip slip). h5py/zipfile only: cheap, and run before Keras starts."""
    from wtransplant.reading.h5io import read_archive_info

    display = str(path)
    try:
        with zipfile.ZipFile(path, "r") as zf:
            info = read_archive_info(zf, display)
    except zipfile.BadZipFile as e:
        raise InputError(f"a zip archive that cannot be read ({e})", path=display) from None
    if info.config is None or "model.weights.h5" not in info.members:
        raise InputError("not a Keras archive (no config.json and model.weights.h5 inside)",
                         path=display)
    return info.config


def legacy_h5_config(path: Path) -> dict:
    """The ``model_config`` of a full-model HDF5 file, after refusing files that point at
    data in other files. h5py only: cheap, and run before Keras starts."""
    from wtransplant.reading.h5io import open_source
    from wtransplant.reading.inspecting import load_source, outside_references

    display = str(path)
    with open_source(path) as src:
        loaded = load_source(src)
        outside = outside_references(loaded.tree)
        if outside:
            raise UnsafeInputError(f"{outside[0]}: data outside the file, refused",
                                   path=display)
        cfg = loaded.tree.root_attrs.get("model_config")
        fmt = loaded.format
    if fmt != "keras-legacy-model" or cfg is None:
        raise InputError(f"an HDF5 file ({fmt}) without a model config: it holds weights "
                         f"only; rebuild it first (`wtransplant spec {path}` drafts a spec)",
                         path=display)
    try:
        from wtransplant.safety.configs import loads

        return loads(cfg, f"{display}: model_config")
    except (TypeError, ValueError) as e:
        raise InputError(f"model_config attribute is not valid JSON: {e}", path=display) \
            from None


def precheck(path: str | os.PathLike, *, trust_graph: bool = False) -> str:
    """``artifact_kind`` plus the checks that need no Keras (archive paths, links out of
    an HDF5 file, a model config present, a SavedModel's ops): lets a command refuse bad
    input at once."""
    p = Path(path)
    kind = artifact_kind(p)
    if kind == "savedmodel":
        from wtransplant.safety.graphs import check_savedmodel

        check_savedmodel(p, trust_graph=trust_graph)
    elif kind == "tflite":
        from wtransplant.safety.graphs import check_tflite

        check_tflite(p, trust_graph=trust_graph)
    elif kind == "keras":
        keras_archive_config(p)
    elif kind == "h5":
        from wtransplant.safety.isolation import preflight

        preflight(p)  # in a child process: a damaged file may make HDF5 loop or crash
        legacy_h5_config(p)
    return kind


def load_keras_archive(path: Path):
    """A ``.keras`` archive, checked (zip paths, config code) and loaded with safe_mode."""
    from wtransplant.building.keras_model import check_config_safe

    check_config_safe(keras_archive_config(path), str(path))
    import keras

    try:
        with quiet_logs():
            return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:
        raise InputError(f"Keras cannot load this archive: {one_line(e)}",
                         path=str(path)) from None


def load_keras_h5(path: Path, *, rebuild_fallback: bool = True):
    """A full-model HDF5 file (Keras 2 or Keras 3 legacy format). Returns (model, note,
    rebuild_report or None). Files Keras 3 refuses (Keras 2 RNNs: ``time_major``) are
    rebuilt from their config and weights by ``rebuild_file`` unless ``rebuild_fallback``
    is false."""
    from wtransplant.building.keras_model import check_config_safe

    display = str(path)
    check_config_safe(legacy_h5_config(path), f"{display}: model_config")
    import keras

    try:
        with quiet_logs():
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
        return model, None, None
    except Exception as e:
        first = one_line(e)[:160]
        if not rebuild_fallback:
            raise InputError(f"Keras cannot load this file: {first}", path=display) from None
    from wtransplant.building.transplanting import rebuild_file

    model, report = rebuild_file(path, progress=False)
    return model, (f"keras.models.load_model refused the file ({first}); rebuilt it from "
                   f"its config and weights with wtransplant rebuild"), report


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:400] or type(e).__name__


@contextlib.contextmanager
def quiet_logs(*names: str, level: int | None = None):
    """Python warnings off, and the named loggers (default: absl) raised to ``level``
    (default ERROR) while the block runs: Keras, TensorFlow and tf2onnx log what the CLI
    reports itself, in one line."""
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in (names or ("absl",))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if level is None else level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


# --------------------------------------------------------------------------------------
# SavedModel, ONNX, LiteRT (layer 3: TensorFlow / onnxruntime imported here only)


class SavedModelArtifact(Artifact):
    """A SavedModel directory, run with ``tf.saved_model.load``: its ``serve`` endpoint
    (Keras' export) if it has one, else the ``serving_default`` signature."""

    kind = "savedmodel"
    runtime = "tf.saved_model"

    def __init__(self, path: Path, *, trust_graph: bool = False):
        from wtransplant.safety.graphs import check_savedmodel

        check_savedmodel(path, trust_graph=trust_graph)  # its ops, read as data, first
        import tensorflow as tf

        display = str(path)
        try:
            with quiet_stderr():
                obj = tf.saved_model.load(str(path))
        except Exception as e:
            raise InputError(f"TensorFlow cannot load this SavedModel: {one_line(e)}",
                             path=display) from None
        self._obj = obj
        sig = obj.signatures.get("serving_default") if hasattr(obj, "signatures") else None
        if sig is None and obj.signatures:
            sig = next(iter(obj.signatures.values()))
        if sig is None:
            raise InputError("the SavedModel has no serving signature", path=display)
        self._sig = sig
        specs = sig.structured_input_signature[1]
        order = _sidecar_order(path / SAVEDMODEL_SIDECAR, "inputs", list(specs))
        ins = [TensorInfo(n, _dims(specs[n].shape), specs[n].dtype.name) for n in order]
        outs_spec = sig.structured_outputs
        out_order = _sidecar_order(path / SAVEDMODEL_SIDECAR, "outputs", sorted(outs_spec))
        outs = [TensorInfo(n, _dims(outs_spec[n].shape), outs_spec[n].dtype.name)
                for n in out_order]
        super().__init__(path, ins, outs)

    def _run(self, xs):
        import tensorflow as tf

        feed = {t.name: tf.constant(a) for t, a in zip(self.inputs, xs)}
        y = self._sig(**feed)
        return [y[t.name].numpy() for t in self.outputs]


class OnnxArtifact(Artifact):
    """An ONNX file run in onnxruntime (CPU)."""

    kind = "onnx"
    runtime = "onnxruntime"

    def __init__(self, path: Path, session=None):
        import onnxruntime as ort

        display = str(path)
        if session is None:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            try:
                with quiet_stderr():  # onnxruntime logs load errors from C++ too
                    session = ort.InferenceSession(str(path), sess_options=so,
                                                   providers=["CPUExecutionProvider"])
            except Exception as e:
                raise InputError(f"onnxruntime cannot load this file: {one_line(e)}",
                                 path=display, detail={"error": str(e)}) from None
        self.session = session
        ins = [TensorInfo(i.name, _ort_dims(i.shape), _ort_dtype(i.type, display))
               for i in session.get_inputs()]
        outs = [TensorInfo(o.name, _ort_dims(o.shape), _ort_dtype(o.type, display))
                for o in session.get_outputs()]
        super().__init__(path, ins, outs)
        meta = session.get_modelmeta()
        self.metadata = dict(meta.custom_metadata_map or {})
        prov = self.metadata.get("wtransplant.provenance")
        if prov:
            with contextlib.suppress(ValueError):
                self.provenance = json.loads(prov)

    def _run(self, xs):
        feed = {t.name: a for t, a in zip(self.inputs, xs)}
        return [np.asarray(y) for y in self.session.run(None, feed)]


_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
              "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(bool)": "bool"}


def _ort_dtype(t: str, display: str) -> str:
    if t not in _ORT_TYPES:
        raise InputError(f"tensor type {t} is not supported", path=display)
    return _ORT_TYPES[t]


def _ort_dims(shape) -> tuple:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class LiteRTArtifact(Artifact):
    """A ``.tflite`` file run in the LiteRT interpreter (``ai_edge_litert`` if installed,
    else TensorFlow's ``tf.lite.Interpreter``), through its first signature."""

    kind = "tflite"
    runtime = "litert"

    def __init__(self, path: Path, *, trust_graph: bool = False):
        from wtransplant.safety.graphs import check_tflite

        check_tflite(path, trust_graph=trust_graph)  # Flex ops that touch files: refused
        display = str(path)
        Interpreter = _litert_interpreter()
        try:
            with quiet_stderr(), quiet_logs():  # tf.lite's deprecation notice
                it = Interpreter(model_path=str(path))
                sigs = it.get_signature_list()
        except Exception as e:
            raise InputError(f"the LiteRT interpreter cannot load this file: {one_line(e)}",
                             path=display) from None
        if not sigs:
            raise InputError("the .tflite file has no signature", path=display)
        self._it = it
        self._sig_key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        runner = it.get_signature_runner(self._sig_key)
        self._runner = runner
        idet = runner.get_input_details()
        odet = runner.get_output_details()
        side = path.with_name(path.name + SIDECAR_SUFFIX)
        in_order = _sidecar_order(side, "inputs", list(idet))
        out_order = _sidecar_order(side, "outputs", sorted(odet))
        ins = [TensorInfo(n, _lite_dims(idet[n]), np.dtype(idet[n]["dtype"]).name)
               for n in in_order]
        outs = [TensorInfo(n, _lite_dims(odet[n]), np.dtype(odet[n]["dtype"]).name)
                for n in out_order]
        super().__init__(path, ins, outs)

    def _run(self, xs):
        try:
            with quiet_stderr():
                y = self._runner(**{t.name: a for t, a in zip(self.inputs, xs)})
        except RuntimeError as e:  # e.g. Flex ops this interpreter does not link
            raise InputError(f"the LiteRT interpreter cannot run this model: {one_line(e)}",
                             path=str(self.path)) from None
        return [np.array(y[t.name]) for t in self.outputs]


def _lite_dims(det) -> tuple:
    sig = det.get("shape_signature")
    if sig is None or len(sig) == 0:
        sig = det["shape"]
    return tuple(None if int(d) < 0 else int(d) for d in sig)


def _litert_interpreter():
    import warnings

    try:
        from ai_edge_litert.interpreter import Interpreter  # the LiteRT package

        return Interpreter
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import tensorflow as tf

        return tf.lite.Interpreter


def _sidecar_order(side: Path, key: str, default: list[str]) -> list[str]:
    """The input/output order a wtransplant export recorded, when it names the same
    tensors as the runtime does; else ``default``."""
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        names = [t["name"] for t in data[key]]
    except (OSError, ValueError, KeyError, TypeError):
        return default
    return names if sorted(names) == sorted(default) else default


# --------------------------------------------------------------------------------------
# loading


def artifact_kind(path: str | os.PathLike) -> str:
    """What ``path`` is, from its name and first bytes (no model code is run)."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", path=str(p))
    if p.is_dir():
        from wtransplant.safety.paths import note_input

        note_input(p)
        if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise InputError("a directory but not a SavedModel (no saved_model.pb inside)",
                         path=str(p))
    from wtransplant.reading.h5io import HDF5_SIGNATURE, check_readable_file

    check_readable_file(p)
    with open(p, "rb") as fh:
        head = fh.read(1024)
    suffix = p.suffix.lower()
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if suffix != ".keras":  # Keras picks its reader by suffix: it would not read a zip
            raise InputError(f"a zip archive named {p.name!r}: Keras reads archives only "
                             f"as .keras files; rename it", path=str(p))
        return "keras"
    if head.startswith(HDF5_SIGNATURE) or (suffix in (".h5", ".hdf5") and
                                           _has_hdf5_signature(p)):
        if suffix == ".keras":  # ...nor an HDF5 file named .keras
            raise InputError("an HDF5 file named .keras: Keras would read it as an archive; "
                             "rename it to .h5", path=str(p))
        return "h5"
    if head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".onnx":
        return "onnx"
    if suffix in SPEC_SUFFIXES:
        return "spec"
    raise InputError("not a model wtransplant can load: expected a .keras archive, a Keras "
                     "full-model .h5, a SavedModel directory, an .onnx or .tflite file, or a "
                     "spec", path=str(p))


def _has_hdf5_signature(p: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(str(p)))
    except Exception:
        return False


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
    if kind == "keras":
        art = KerasArtifact(load_keras_archive(p), p, "keras")
    elif kind == "h5":
        model, note, report = load_keras_h5(p)
        art = KerasArtifact(model, p, "h5")
        if note:
            art.notes.append(note)
        if report is not None:
            art.provenance = {"source": report.source, "spec": report.spec}
    elif kind == "spec":
        from wtransplant.building.transplanting import rebuild

        model, report = rebuild(p, progress=False)
        art = KerasArtifact(model, p, "spec")
        art.provenance = {"source": report.source, "spec": report.spec,
                          "parity": report.parity.to_dict() if report.parity else None}
        art.notes.append("rebuilt from the spec: "
                         + (report.parity.summary() if report.parity else report.parity_note))
    elif kind == "savedmodel":
        art = SavedModelArtifact(p, trust_graph=trust_graph)
    elif kind == "onnx":
        art = OnnxArtifact(p)
    elif kind == "tflite":
        art = LiteRTArtifact(p, trust_graph=trust_graph)
    else:
        raise InputError(f"unknown artifact kind {kind!r}", path=str(p))
    if art.provenance is None:
        art.provenance = read_sidecar(p)
    return art


def from_model(model) -> KerasArtifact:
    """Wrap an in-memory Keras model."""
    return KerasArtifact(model, None, "model")


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


# --------------------------------------------------------------------------------------
# quiet C++ logging


@contextlib.contextmanager
def quiet_stderr(replay: bool | None = None):
    """Send file descriptor 2 to a temporary file while the block runs (TensorFlow,
    LiteRT and onnxruntime log from C++ straight to it). What was captured is replayed if
    the block raises something other than a WTError (which says its own one line) and
    ``replay`` is true (default: if WTRANSPLANT_DEBUG is set)."""
    import sys

    from wtransplant.errors import WTError

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as cap:
        os.dup2(cap.fileno(), 2)
        try:
            yield
        except WTError:
            os.dup2(saved, 2)
            raise
        except BaseException:
            os.dup2(saved, 2)
            if replay or (replay is None and os.environ.get("WTRANSPLANT_DEBUG")):
                cap.seek(0)
                sys.stderr.write(cap.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


__all__ = ["Artifact", "KerasArtifact", "SavedModelArtifact", "OnnxArtifact",
           "LiteRTArtifact", "TensorInfo", "load_artifact", "artifact_kind", "from_model",
           "random_inputs", "readable_name", "precheck", "quiet_logs", "one_line", "sidecar_path", "read_sidecar", "quiet_stderr"]
